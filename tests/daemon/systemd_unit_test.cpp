// The units' hardening, as systemd itself scores it: 2.0 or better; and the
// job template (kaiod@.service) as systemd-analyze verify reads an instance.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <regex>
#include <string>

#include "tests/support/process.h"
#include "tests/support/sandbox.h"

namespace {

bool have_systemd_analyze() {
  return std::system("command -v systemd-analyze >/dev/null 2>&1") == 0;
}

// `systemd-analyze security`'s overall score for a unit file of systemd/.
void expect_exposure_two_or_better(const std::string& file, const std::string& reported_as) {
  std::string cmd =
      std::string("systemd-analyze security --offline=true --no-pager ") + KAIO_SOURCE_DIR + "/systemd/" + file;
  std::string out = kaio::test::run_command(cmd, 120).output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("Overall exposure level for " + reported_as + ": ([0-9.]+)")))
      << out;
  double score = std::stod(m[1]);
  std::printf("systemd exposure score of %s: %.1f\n", file.c_str(), score);
  EXPECT_LE(score, 2.0) << out;
}

}  // namespace

TEST(SystemdUnit, ExposureScoreIsTwoOrBetter) {
  if (!have_systemd_analyze()) GTEST_SKIP() << "skipped: no systemd-analyze";
  expect_exposure_two_or_better("kaiod.service", "kaiod.service");
  expect_exposure_two_or_better("kaiod@.service", "kaiod@i.service");
}

// kaiod@2.service, a job of two ranks: systemd reads it without a complaint
// (a key it does not know, a bad value, a command that is not there).
TEST(SystemdUnit, JobTemplateVerifiesClean) {
  if (!have_systemd_analyze()) GTEST_SKIP() << "skipped: no systemd-analyze";
  if (!std::filesystem::exists("/usr/bin/mpirun")) GTEST_SKIP() << "skipped: no /usr/bin/mpirun (openmpi-bin)";
  kaio::test::Sandbox dir("unit");
  std::filesystem::copy_file(std::string(KAIO_SOURCE_DIR) + "/systemd/kaiod@.service", dir / "kaiod@.service");
  auto r = kaio::test::run_command(
      "systemd-analyze verify " + kaio::test::shell_quote((dir / "kaiod@2.service").string()), 120);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "") << "systemd-analyze verify complained";
}
