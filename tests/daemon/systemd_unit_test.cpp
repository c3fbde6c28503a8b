// The unit's hardening, as systemd itself scores it: 2.0 or better.
#include <gtest/gtest.h>

#include <cstdio>
#include <regex>
#include <string>

#include "tests/support/process.h"

TEST(SystemdUnit, ExposureScoreIsTwoOrBetter) {
  if (std::system("command -v systemd-analyze >/dev/null 2>&1") != 0) GTEST_SKIP() << "skipped: no systemd-analyze";
  std::string cmd =
      std::string("systemd-analyze security --offline=true --no-pager ") + KAIO_SOURCE_DIR + "/systemd/kaiod.service";
  std::string out = kaio::test::run_command(cmd, 120).output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("Overall exposure level for kaiod.service: ([0-9.]+)"))) << out;
  double score = std::stod(m[1]);
  std::printf("systemd exposure score: %.1f\n", score);
  EXPECT_LE(score, 2.0) << out;
}
