#include "common/units.h"

#include <gtest/gtest.h>

using namespace kaio;
using namespace std::chrono_literals;

TEST(Units, ParsesDecimalAndBinarySizes) {
  EXPECT_EQ(parse_size("10GB"), 10'000'000'000ull);
  EXPECT_EQ(parse_size("512MiB"), 512ull * 1024 * 1024);
  EXPECT_EQ(parse_size(" 1.5 gb "), 1'500'000'000ull);
  EXPECT_EQ(parse_size("4096"), 4096ull);
  EXPECT_EQ(parse_size("7B"), 7ull);
  EXPECT_EQ(parse_size("2TiB"), 2ull << 40);
}

TEST(Units, RejectsMalformedSizes) {
  for (const char* bad : {"", "GB", "10XB", "-5MB", "1..2GB", "ten", "10 G B", "1e400"})
    EXPECT_FALSE(parse_size(bad)) << bad;
}

TEST(Units, ParsesDurations) {
  EXPECT_EQ(parse_duration("30s"), 30s);
  EXPECT_EQ(parse_duration("500ms"), 500ms);
  EXPECT_EQ(parse_duration("2m"), 120s);
  EXPECT_EQ(parse_duration("1.5h"), 90min);
  EXPECT_EQ(parse_duration("12"), 12s);
  EXPECT_FALSE(parse_duration("12 parsecs"));
  EXPECT_FALSE(parse_duration("s"));
}

TEST(Units, FormatsForHumans) {
  EXPECT_EQ(format_size(999), "999 B");
  EXPECT_EQ(format_size(1'500'000'000), "1.50 GB");
  EXPECT_EQ(format_duration(120ms), "120ms");
  EXPECT_EQ(format_duration(3725s), "1h02m");
  EXPECT_EQ(format_duration(95s), "1m35s");
}
