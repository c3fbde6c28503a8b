// What kaiod and kaioctl say when the user got something wrong or there is
// nothing to show: the real binaries, their output read as the user sees it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "common/error.h"
#include "daemon/control.h"
#include "daemon/status.h"
#include "tests/support/process.h"
#include "tests/support/sandbox.h"

using namespace kaio::daemon;
using kaio::test::run_command;
using kaio::test::shell_quote;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string kaiod() {
  return std::string(KAIO_BUILD_DIR) + "/daemon/kaiod";
}
std::string kaioctl() {
  return std::string(KAIO_BUILD_DIR) + "/daemon/kaioctl";
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

struct Messages : testing::Test {
  kaio::test::Sandbox dir{"msg", kaio::test::Sandbox::keep_on_failure};
  fs::path write(const std::string& name, const std::string& text) {
    fs::path p = dir / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
};

}  // namespace

// The typo is named with the key it probably meant, once, whether kaiod checks
// the config or starts with it.
TEST_F(Messages, UnknownConfigKeySuggestsTheKnownOneOnce) {
  fs::path config = write("kaiod.json", R"({"source": {"repo": "org/data"}, "storage": {"budjet": "1GB"}})");
  const std::string said = "storage.budjet: unknown key; did you mean storage.budget?";
  auto check = run_command(shell_quote(kaiod()) + " --check-config " + shell_quote(config.string()), 30);
  EXPECT_EQ(check.exit_code, 1) << check.output;
  EXPECT_EQ(count(check.output, said), 1u) << check.output;
  auto run = run_command(
      "env -u JOURNAL_STREAM -u NOTIFY_SOCKET " + shell_quote(kaiod()) + " --config " + shell_quote(config.string()),
      30);
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_EQ(count(run.output, said), 1u) << run.output;
  EXPECT_EQ(count(run.output, "budjet"), 1u) << run.output;
}

// A failure after logging started is logged, not also printed.
TEST_F(Messages, StartUpFailureAfterLoggingIsPrintedOnce) {
  write("not-a-folder", "x");
  json c = {{"source", {{"repo", "org/data"}, {"endpoint", "http://127.0.0.1:1"}}},
            {"storage",
             {{"cache_dir", (dir / "not-a-folder" / "cache").string()},
              {"state_dir", (dir / "not-a-folder" / "state").string()}}},
            {"control", {{"socket", (dir / "kaiod.sock").string()}}}};
  fs::path config = write("kaiod.json", c.dump());
  auto run = run_command(
      "env -u JOURNAL_STREAM -u NOTIFY_SOCKET " + shell_quote(kaiod()) + " --config " + shell_quote(config.string()),
      60);
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_EQ(count(run.output, "cannot run"), 1u) << run.output;
  EXPECT_EQ(count(run.output, "not-a-folder/state"), 1u) << run.output;
}

TEST_F(Messages, KaioctlNamesAnUnknownCommandBeforeTheUsage) {
  auto r = run_command(shell_quote(kaioctl()) + " frobnicate", 20);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  size_t named = r.output.find("kaioctl: unknown command \"frobnicate\"");
  size_t usage = r.output.find("usage:");
  ASSERT_NE(named, std::string::npos) << r.output;
  ASSERT_NE(usage, std::string::npos) << r.output;
  EXPECT_LT(named, usage) << r.output;
  // No command at all is not an unknown one.
  auto bare = run_command(shell_quote(kaioctl()), 20);
  EXPECT_EQ(bare.exit_code, 2);
  EXPECT_EQ(bare.output.find("unknown command"), std::string::npos) << bare.output;
}

// `kaioctl help` is the usage on stdout, exit 0, with every option of probe;
// `probe --help` says what each does.
TEST_F(Messages, KaioctlHelpNamesEveryProbeOption) {
  auto help = run_command(shell_quote(kaioctl()) + " help 2>/dev/null", 20);
  EXPECT_EQ(help.exit_code, 0) << help.output;
  auto probe_help = run_command(shell_quote(kaioctl()) + " probe --help 2>/dev/null", 20);
  EXPECT_EQ(probe_help.exit_code, 0) << probe_help.output;
  for (const char* option : {"--preview out.png", "--window N", "--frames T", "--stride S", "--fps F", "--size N"}) {
    EXPECT_NE(help.output.find(option), std::string::npos) << option << "\n" << help.output;
    EXPECT_NE(probe_help.output.find(std::string("  ") + option + "  "), std::string::npos) << option << "\n"
                                                                                            << probe_help.output;
  }
}

TEST_F(Messages, KaioctlLsSaysWhenThereIsNothingToList) {
  json files = json::array(), clips = json::array();
  ControlServer server(dir / "kaiod.sock", "", [&](const std::string& cmd, const json&, const Peer&) -> json {
    if (cmd != "ls") throw kaio::Error(kaio::ErrorKind::usage, "unexpected " + cmd);
    return {{"files", files}, {"clips", clips}};
  });
  std::string ls = shell_quote(kaioctl()) + " --socket " + shell_quote((dir / "kaiod.sock").string()) + " ls";
  auto empty = run_command(ls, 20);
  EXPECT_EQ(empty.exit_code, 0) << empty.output;
  EXPECT_NE(empty.output.find("no files or clips yet"), std::string::npos) << empty.output;
  auto failed = run_command(ls + " --state failed", 20);
  EXPECT_EQ(failed.exit_code, 0) << failed.output;
  EXPECT_NE(failed.output.find("no files or clips in state failed"), std::string::npos) << failed.output;
  // --json prints the object as it is, nothing else.
  auto as_json = run_command(ls + " --json", 20);
  EXPECT_FALSE(json::parse(as_json.output, nullptr, false).is_discarded()) << as_json.output;
  // With rows there is no such line.
  files.push_back({{"name", "data/a.tar.gz"}, {"state", "done"}, {"reason", ""}, {"size", 1}, {"attempts", 0}});
  auto rows = run_command(ls, 20);
  EXPECT_NE(rows.output.find("data/a.tar.gz"), std::string::npos) << rows.output;
  EXPECT_EQ(rows.output.find("no files or clips"), std::string::npos) << rows.output;
}

TEST_F(Messages, ProbeOfAFileThatIsNeitherVideoNorArchiveSaysSo) {
  for (const auto& [name, bytes] : {std::pair<std::string, std::string>{"notes.txt", "just some notes, not a video\n"},
                                    {"empty.mp4", ""},
                                    {"random.bin", std::string(4096, '\x5a')}}) {
    fs::path file = write(name, bytes);
    auto r = run_command(shell_quote(kaioctl()) + " probe " + shell_quote(file.string()), 60);
    EXPECT_EQ(r.exit_code, 1) << name << ": " << r.output;
    EXPECT_NE(r.output.find(file.string() + ": error:"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("neither a video nor an archive"), std::string::npos) << name << ": " << r.output;
    EXPECT_EQ(r.output.find("archive " + file.string()), std::string::npos) << name << ": " << r.output;
    EXPECT_EQ(r.output.find("broken stream"), std::string::npos) << name << ": " << r.output;
  }
  // A file that is an archive, only a broken one, is still called that.
  std::string gzip_then_garbage =
      std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", 10) + std::string(512, '\x01');
  fs::path broken = write("broken.tar.gz", gzip_then_garbage);
  auto r = run_command(shell_quote(kaioctl()) + " probe " + shell_quote(broken.string()), 60);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.find("neither a video nor an archive"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("archive"), std::string::npos) << r.output;
  // A file that is not there is named as missing, not as a bad format.
  auto missing = run_command(shell_quote(kaioctl()) + " probe " + shell_quote((dir / "nope.mp4").string()), 60);
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_EQ(missing.output.find("neither a video nor an archive"), std::string::npos) << missing.output;
}

// The loss beside its average and trend, over seeded noisy series: a falling
// series reads falling, a flat one flat, a rising one rising, and nothing
// is claimed before 20 steps.
TEST(LossTrend, SaysWhetherANoisyLossFallsAndPrintsItBesideTheLast) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> noise(-0.005, 0.005);
    for (auto [slope, expected] : {std::pair{-0.01, "falling"}, {0.0, "flat"}, {0.01, "rising"}}) {
      LossTrend trend;
      double loss = 2.0;
      for (int step = 1; step <= 200; ++step) {
        loss *= 1 + slope;
        trend.add(loss * (1 + noise(rng)));
        if (step < 20) {
          ASSERT_EQ(trend.direction(), "") << "step " << step;
        }
      }
      EXPECT_EQ(trend.direction(), expected) << "seed " << seed << " slope " << slope;
      EXPECT_NEAR(trend.average(), loss, loss * 0.5) << "seed " << seed;
    }
  }
  ServiceStatus s;
  s.train.step = 30;
  s.train.loss = 0.5;
  s.train.loss_avg = 0.6;
  s.train.loss_trend = "falling";
  EXPECT_NE(render_status(to_json(s)).find("loss 0.5000 (avg 0.6000, falling)"), std::string::npos)
      << render_status(to_json(s));
  s.train.step = 0;
  std::string before = render_status(to_json(s));
  EXPECT_NE(before.find("loss - on -, waiting for data -"), std::string::npos) << before;
}

// A job held by one of its ranks says which and why, in the JSON and on
// kaioctl's job line; with every rank ready the list is empty.
TEST(JobStatus, NamesTheRanksTheJobWaitsForAndWhy) {
  ServiceStatus s;
  s.job.world = 2;
  s.job.allreduce = "mpi (host memory)";
  s.job.waiting_for = {{1, "waiting-network"}};
  json j = to_json(s);
  EXPECT_EQ(j["job"]["waiting_for"], json::parse(R"([{"rank": 1, "reason": "waiting-network"}])"));
  EXPECT_NE(render_status(j).find(
                "job       rank 0 of 2, all-reduce over mpi (host memory), waiting for rank 1 (waiting-network)\n"),
            std::string::npos)
      << render_status(j);
  s.job.waiting_for.clear();
  EXPECT_EQ(to_json(s)["job"]["waiting_for"], json::array());
}
