#include "common/log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

TEST(Log, RegisteredSecretsAreScrubbed) {
  kaio::add_secret("hf_abcdefSECRET123");
  EXPECT_EQ(kaio::redact("Authorization: Bearer hf_abcdefSECRET123 and hf_abcdefSECRET123"),
            "Authorization: Bearer *** and ***");
  EXPECT_EQ(kaio::redact("nothing to hide"), "nothing to hide");
}

// What the logger writes to stderr while `log` runs.
template <class F>
std::string logged(F log) {
  testing::internal::CaptureStderr();
  kaio::setup_logging("info", "kaio-test");
  log();
  spdlog::default_logger()->flush();
  return testing::internal::GetCapturedStderr();
}

TEST(Log, LoggerNeverPrintsASecret) {
  kaio::add_secret("hf_tokenXYZ987");
  std::string out = logged([] { spdlog::info("download failed with token {}", "hf_tokenXYZ987"); });
  EXPECT_EQ(out.find("hf_tokenXYZ987"), std::string::npos) << out;
  EXPECT_NE(out.find("download failed with token ***"), std::string::npos) << out;
}

TEST(Log, ControlBytesInNamesCannotSplitALine) {
  EXPECT_EQ(kaio::printable("a\x1b[31mred\nforged"), "a\\x1b[31mred\\x0aforged");
  std::string out = logged([] { spdlog::warn("member {} failed", "evil\n2026-01-01 info  checkpoint durable"); });
  EXPECT_NE(out.find("evil\\x0a2026-01-01"), std::string::npos) << out;
  EXPECT_EQ(out.find("evil\n"), std::string::npos) << out;
}
