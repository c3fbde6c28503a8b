#include "decode/captions.h"

#include <gtest/gtest.h>

#include <sstream>

#include "common/error.h"

namespace kaio::decode {
namespace {

TEST(DecodeCaptions, TakesTheGptAnswerPerVideo) {
  std::istringstream in(R"([
    {"id": "x1", "video": "academic_source/Charades/AB12.mp4", "data_source": "charades",
     "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                       {"value": "A man opens a door.", "from": "gpt"}]},
    {"id": 7, "conversations": [{"from": "gpt", "value": "Cars pass by."}, {"from": "gpt", "value": "second"}],
     "video": "youtube/Q9.mp4", "extra": {"nested": [1, 2, {"video": "ignored"}]}},
    {"id": "novideo", "conversations": []}
  ])");
  auto map = parse_captions(in, "test.json");
  EXPECT_EQ(map.size(), 2u);
  ASSERT_NE(map.find("academic_source/Charades/AB12.mp4"), nullptr);
  EXPECT_EQ(*map.find("academic_source/Charades/AB12.mp4"), "A man opens a door.");
  EXPECT_EQ(*map.find("./youtube/Q9.mp4"), "Cars pass by.");
  ASSERT_NE(map.find("Q9.mp4"), nullptr);  // archive without the folder prefix
  EXPECT_EQ(map.find("missing.mp4"), nullptr);
}

TEST(DecodeCaptions, MalformedJsonNamesTheFile) {
  std::istringstream in(R"([{"video": "a.mp4", "conversations": [)");
  try {
    parse_captions(in, "broken_cap_processed.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt);
    EXPECT_NE(std::string(e.what()).find("broken_cap_processed.json"), std::string::npos);
  }
}

// A large file parses without building a DOM (a 20 MB document here).
TEST(DecodeCaptions, LargeFileStreams) {
  std::string doc = "[";
  std::string answer(2000, 'w');
  for (int i = 0; i < 10000; ++i) {
    if (i) doc += ",";
    doc += R"({"id":"v)" + std::to_string(i) + R"(","video":"src/v)" + std::to_string(i) +
           R"(.mp4","conversations":[{"from":"human","value":"q"},{"from":"gpt","value":")" + answer + "\"}]}";
  }
  doc += "]";
  std::istringstream in(doc);
  auto map = parse_captions(in, "big.json");
  EXPECT_EQ(map.size(), 10000u);
  EXPECT_EQ(map.find("src/v9999.mp4")->size(), 2000u);
}

}  // namespace
}  // namespace kaio::decode
