// Issue 20's picture of the run: the time series kaiod keeps in the ledger
// (RunSeriesWriter, state/run_series.h) and `kaioctl report` drawing it. The
// real kaiod runs twice on a small dataset (a restart); the SVG kaioctl makes
// from that ledger is parsed as XML by Python's ElementTree and held to the
// rows: four panels, a point per row in every series, the budget line at the
// configured budget, a line per restart.
#include <gtest/gtest.h>

#include <atomic>

#include "common/error.h"
#include "daemon/run_series_writer.h"
#include "state/ledger.h"
#include "tests/reliability/harness.h"

using namespace kaio::reliability;
using kaio::daemon::RunSeriesWriter;
using kaio::daemon::ServiceStatus;
using kaio::state::Ledger;
using kaio::state::RunSample;
using kaio::state::SampleKind;

namespace {

// Debian's interpreter (the one the tests use), else whatever python3 is first.
std::string python() {
  return fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

// Parses the SVG (a parse error fails the script) and reads the rows of the
// ledger; prints what the test compares as JSON.
constexpr const char* kCheckScript = R"py(
import json, re, sqlite3, sys, xml.etree.ElementTree as ET
svg_text = open(sys.argv[1], encoding="utf-8").read()
if sys.argv[1].endswith(".html"):
    svg_text = svg_text[svg_text.index("<svg"):svg_text.index("</svg>") + 6]
root = ET.fromstring(svg_text)
ns = "{http://www.w3.org/2000/svg}"
panels = {}
for g in root.iter(ns + "g"):
    if g.get("class") != "panel":
        continue
    panels[g.get("id")] = {k: float(g.get("data-" + k)) for k in ("top", "bottom", "min", "max")}
series = {}
for p in root.iter(ns + "polyline"):
    pts = [tuple(map(float, xy.split(","))) for xy in p.get("points").split()]
    series.setdefault(p.get("data-series"), []).extend(pts)
restarts = sum(1 for l in root.iter(ns + "line") if l.get("class") == "restart") // 4
db = sqlite3.connect("file:" + sys.argv[2] + "?mode=ro", uri=True)
rows = db.execute("SELECT kind, budget_bytes, loss IS NOT NULL FROM run_samples ORDER BY id").fetchall()
print(json.dumps({"panels": panels,
                  "points": {k: len(v) for k, v in series.items()},
                  "budget_y": sorted(set(round(y, 1) for _, y in series.get("budget", []))),
                  "restarts": restarts,
                  "rows": len(rows),
                  "kinds": [r[0] for r in rows],
                  "budgets": sorted(set(r[1] for r in rows)),
                  "with_loss": sum(r[2] for r in rows)}))
)py";

json check_picture(const fs::path& picture, const fs::path& db, const fs::path& dir) {
  fs::path script = dir / "check_picture.py";
  std::ofstream(script) << kCheckScript;
  auto r = run_command(python() + " " + shell_quote(script.string()) + " " + shell_quote(picture.string()) + " " +
                           shell_quote(db.string()),
                       120);
  EXPECT_EQ(r.exit_code, 0) << "the picture does not parse: " << r.output;
  json j = json::parse(r.output, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.output;
  return j.is_discarded() ? json::object() : j;
}

// Runs kaiod until it finishes its epoch and exits by itself.
void run_to_exit(const DaemonSetup& s) {
  Child kaiod;
  start_kaiod(kaiod, s, false);
  auto exited = kaiod.wait_for(300s);
  ASSERT_TRUE(exited.has_value()) << "kaiod did not finish: " << tail(read_text(s.log()));
  ASSERT_EQ(kaiod.exit_code(), 0) << tail(read_text(s.log()));
}

void expect_picture_holds_the_rows(const json& pic, uint64_t budget) {
  int64_t rows = pic.value("rows", 0);
  for (const char* panel : {"panel-disk", "panel-rates", "panel-loss", "panel-wait"})
    EXPECT_TRUE(pic["panels"].contains(panel)) << "no " << panel << ": " << pic.dump();
  for (const char* name : {"disk", "reserved", "budget", "download", "decode", "train", "data_wait"})
    EXPECT_EQ(pic["points"].value(name, 0), rows) << name << " has a point per row: " << pic.dump();
  EXPECT_EQ(pic["points"].value("loss", 0), pic.value("with_loss", -1)) << pic.dump();
  EXPECT_EQ(pic["points"].value("loss_avg", 0), pic.value("with_loss", -1)) << pic.dump();
  EXPECT_GT(pic.value("with_loss", 0), 0) << "a trained run has a loss";
  // The budget line is flat, at the configured budget on the disk panel's scale.
  EXPECT_EQ(pic["budgets"], json::array({budget}));
  const auto& p = pic["panels"]["panel-disk"];
  double want = p.value("bottom", 0.0) - (static_cast<double>(budget) - p.value("min", 0.0)) /
                                             (p.value("max", 1.0) - p.value("min", 0.0)) *
                                             (p.value("bottom", 0.0) - p.value("top", 0.0));
  ASSERT_EQ(pic["budget_y"].size(), 1u) << pic.dump();
  EXPECT_NEAR(pic["budget_y"][0].get<double>(), want, 0.11);
}

}  // namespace

// Two runs of the real kaiod on one state folder (the second resumes a
// finished epoch), then kaioctl report beside the ledger they left.
TEST(Report, DrawsARealRunFromItsLedger) {
  HubRun run("report", {}, small_spec());
  ASSERT_TRUE(run.hub->ok()) << read_text(run.dir / "hub.log");
  run.s.budget = "16MB";
  run.s.write_config();
  run_to_exit(run.s);
  run_to_exit(run.s);

  std::string kinds = sql(run.s.db(), "select group_concat(kind, ' ') from run_samples");
  std::printf("rows: %s\n", kinds.c_str());
  for (const char* kind : {"start", "checkpoint", "stop"})
    EXPECT_NE(kinds.find(kind), std::string::npos) << "no " << kind << " row: " << kinds;

  for (const char* name : {"run.svg", "run.html"}) {
    fs::path out = run.dir / name;
    auto r = run_command(shell_quote(kaioctl_bin().string()) + " report --out " + shell_quote(out.string()) +
                             " --state-dir " + shell_quote(run.s.state().string()),
                         120);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(name), std::string::npos) << r.output;
    json pic = check_picture(out, run.s.db(), run.dir);
    std::printf("%s: %s\n", name, pic.dump().c_str());
    expect_picture_holds_the_rows(pic, 16'000'000);
    int64_t starts = 0;
    for (const auto& k : pic["kinds"]) starts += k == "start" ? 1 : 0;
    EXPECT_EQ(starts, 2) << pic.dump();
    EXPECT_EQ(pic.value("restarts", -1), starts - 1) << "a line per restart";
  }
}

// With no samples, or no ledger, or a format it does not draw, kaioctl report
// says so and writes nothing.
TEST(Report, SaysWhatIsMissing) {
  Sandbox dir("report-empty", Sandbox::keep_on_failure);
  { Ledger::open(dir / "state"); }
  auto report = [&](const std::string& args) {
    return run_command(shell_quote(kaioctl_bin().string()) + " report " + args, 60);
  };
  fs::path out = dir / "x.svg";
  auto empty = report("--out " + shell_quote(out.string()) + " --state-dir " + shell_quote((dir / "state").string()));
  EXPECT_EQ(empty.exit_code, 1) << empty.output;
  EXPECT_NE(empty.output.find("holds 0 samples of the run; a picture needs 2"), std::string::npos) << empty.output;
  auto missing = report("--out " + shell_quote(out.string()) + " --state-dir " + shell_quote((dir / "none").string()));
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_NE(missing.output.find((dir / "none" / "kaio.db").string()), std::string::npos) << missing.output;
  auto gif = report("--out " + shell_quote((dir / "x.gif").string()) + " --state-dir " +
                    shell_quote((dir / "state").string()));
  EXPECT_EQ(gif.exit_code, 2) << gif.output;
  EXPECT_NE(gif.output.find("not \".gif\""), std::string::npos) << gif.output;
  auto png = report("--out " + shell_quote((dir / "x.png").string()));
  EXPECT_EQ(png.exit_code, 2) << png.output;
  EXPECT_NE(png.output.find("rsvg-convert -o run.png run.svg"), std::string::npos) << png.output;
  EXPECT_EQ(report("--state-dir x").exit_code, 2);
  EXPECT_FALSE(fs::exists(out));
}

// The writer's cadence, at 20 ms instead of a minute: a start row, rows on
// its own thread, a checkpoint row when told, one stop row; a status that
// cannot be read (as a ledger write that fails) costs its row, not the caller.
TEST(RunSeriesWriter, WritesStartIntervalCheckpointAndStopRows) {
  Sandbox dir("series-writer");
  auto ledger = Ledger::open(dir.path());
  std::atomic<bool> broken{false};
  ServiceStatus status;
  status.state = "running";
  status.budget_bytes = 5'000'000;
  RunSeriesWriter writer(
      ledger,
      [&] {
        if (broken) throw kaio::Error(kaio::ErrorKind::disk_full, "no space left");
        return status;
      },
      20ms);
  writer.start();
  auto minutes = [&] {
    auto rows = ledger.run_samples();
    return std::count_if(rows.begin(), rows.end(), [](const RunSample& r) { return r.kind == SampleKind::minute; });
  };
  ASSERT_TRUE(wait_until([&] { return minutes() >= 3; }, 120s));
  broken = true;
  EXPECT_NO_THROW(writer.checkpoint());
  broken = false;
  writer.checkpoint();
  writer.stop();
  writer.stop();
  auto rows = ledger.run_samples();
  ASSERT_GE(rows.size(), 5u);
  EXPECT_EQ(rows.front().kind, SampleKind::start);
  EXPECT_EQ(rows.back().kind, SampleKind::stop);
  EXPECT_EQ(std::count_if(rows.begin(), rows.end(), [](const RunSample& r) { return r.kind == SampleKind::stop; }), 1);
  EXPECT_EQ(
      std::count_if(rows.begin(), rows.end(), [](const RunSample& r) { return r.kind == SampleKind::checkpoint; }), 1);
  EXPECT_EQ(rows.back().budget_bytes, 5'000'000u);
  EXPECT_FALSE(rows.back().loss.has_value()) << "no step, no loss";
}
