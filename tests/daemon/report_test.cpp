// Issue 20's picture of the run: the time series kaiod keeps in the ledger
// (RunSeriesWriter, state/run_series.h) and `kaioctl report` drawing it. The
// real kaiod runs twice on a small dataset (a restart); the SVG kaioctl makes
// from that ledger is parsed as XML by Python's ElementTree and held to the
// rows: four panels, a point per row in every series, the budget line at the
// configured budget, a line per restart.
#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <mutex>

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
bands = sorted(set(r.get("data-band") for r in root.iter(ns + "rect") if r.get("class") == "band"))
db = sqlite3.connect("file:" + sys.argv[2] + "?mode=ro", uri=True)
rows = db.execute("SELECT kind, budget_bytes, loss IS NOT NULL FROM run_samples ORDER BY id").fetchall()
print(json.dumps({"panels": panels,
                  "points": {k: len(v) for k, v in series.items()},
                  "budget_y": sorted(set(round(y, 1) for _, y in series.get("budget", []))),
                  "restarts": restarts,
                  "bands": bands,
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

int64_t rows_where(const DaemonSetup& s, const std::string& condition) {
  std::string n = sql(s.db(), "select count(*) from run_samples where " + condition);
  return n.empty() || !std::isdigit(static_cast<unsigned char>(n[0])) ? 0 : std::stoll(n);
}

// Waits for `rows` rows matching `condition` (bounded), naming them on failure.
void expect_rows(const DaemonSetup& s, const std::string& condition, int64_t rows = 1) {
  EXPECT_TRUE(wait_until([&] { return rows_where(s, condition) >= rows; }, 120s))
      << "no row where " << condition << ": " << sql(s.db(), "select kind, state from run_samples")
      << tail(read_text(s.log()));
}

// SIGTERM: kaiod stops after a checkpoint and exits 0.
void stop(Child& kaiod, const DaemonSetup& s) {
  kaiod.signal(SIGTERM);
  ASSERT_TRUE(kaiod.wait_for(150s).has_value()) << "kaiod did not stop: " << tail(read_text(s.log()));
  EXPECT_EQ(kaiod.exit_code(), 0) << tail(read_text(s.log()));
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

// Two runs of the real kaiod on one state folder, the first paused and
// resumed, then kaioctl report beside the ledger they left. Each step waits
// for its rows to be there.
TEST(Report, DrawsARealRunFromItsLedger) {
  HubRun run("report", {}, small_spec());
  ASSERT_TRUE(run.hub->ok()) << read_text(run.dir / "hub.log");
  run.s.budget = "16MB";
  run.s.train = {{"epochs", 1000}};  // still training when paused and stopped
  run.s.write_config();
  {
    Child kaiod;
    start_kaiod(kaiod, run.s, false);
    expect_rows(run.s, "kind = 'checkpoint'");
    auto paused = kaioctl(run.s, "pause --reason picture", 60);
    ASSERT_EQ(paused.exit_code, 0) << paused.output;
    expect_rows(run.s, "state = 'paused'");
    ASSERT_EQ(kaioctl(run.s, "resume").exit_code, 0);
    expect_rows(run.s, "state = 'running' and id > (select max(id) from run_samples where state = 'paused')");
    stop(kaiod, run.s);
  }
  {
    Child kaiod;
    start_kaiod(kaiod, run.s, false);
    expect_rows(run.s, "kind = 'start'", 2);
    // The restart's row shows the step it resumes from, not 0 (it is written
    // before the trainer loads the checkpoint).
    std::string resumed = sql(run.s.db(), "select step from run_samples where kind = 'start' order by id desc limit 1");
    std::string last = sql(run.s.db(),
                           "select max(step) from run_samples where kind = 'checkpoint' and "
                           "id < (select max(id) from run_samples where kind = 'start')");
    EXPECT_EQ(resumed, last) << "the restart's start row";
    EXPECT_NE(resumed, "0");
    expect_rows(run.s, "kind = 'checkpoint' and id > (select max(id) from run_samples where kind = 'start')");
    stop(kaiod, run.s);
  }

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
    EXPECT_EQ(pic["bands"], json::array({"down", "paused"})) << "the pause and the restart's gap are marked";
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
  RunSeriesWriter writer(
      ledger,
      [&] {
        if (broken) throw kaio::Error(kaio::ErrorKind::disk_full, "no space left");
        ServiceStatus s;
        s.state = "running";
        s.budget_bytes = 5'000'000;
        return s;
      },
      20ms, 5ms);
  writer.start();
  auto count = [&](SampleKind kind) {
    auto rows = ledger.run_samples();
    return std::count_if(rows.begin(), rows.end(), [&](const RunSample& r) { return r.kind == kind; });
  };
  ASSERT_TRUE(wait_until([&] { return count(SampleKind::minute) >= 3; }, 120s));
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
  EXPECT_EQ(count(SampleKind::stop), 1);
  EXPECT_EQ(count(SampleKind::checkpoint), 1);
  EXPECT_EQ(count(SampleKind::state), 0) << "running throughout";
  EXPECT_EQ(rows.back().budget_bytes, 5'000'000u);
  EXPECT_FALSE(rows.back().loss.has_value()) << "no step, no loss";
}

// A pause and an outage each get a row where they begin and where they end,
// long before the minute's row.
TEST(RunSeriesWriter, WritesARowWhenAPauseOrAnOutageBeginsAndEnds) {
  Sandbox dir("series-writer");
  auto ledger = Ledger::open(dir.path());
  std::mutex mutex;
  std::string state = "running";
  RunSeriesWriter writer(
      ledger,
      [&] {
        ServiceStatus s;
        std::lock_guard lock(mutex);
        s.state = state;
        return s;
      },
      std::chrono::hours(1), 5ms);
  writer.start();
  auto last_state = [&] {
    auto rows = ledger.run_samples();
    return rows.back().kind == SampleKind::state ? rows.back().state : std::string();
  };
  // budget-wait is no span of the picture: its row is the outage's end.
  for (const char* next : {"paused", "running", "waiting-network", "budget-wait"}) {
    {
      std::lock_guard lock(mutex);
      state = next;
    }
    ASSERT_TRUE(wait_until([&] { return last_state() == next; }, 120s)) << next;
  }
  writer.stop();
  std::vector<std::string> states;
  for (const auto& r : ledger.run_samples())
    if (r.kind == SampleKind::state) states.push_back(r.state);
  EXPECT_EQ(states, (std::vector<std::string>{"paused", "running", "waiting-network", "budget-wait"}));
}
