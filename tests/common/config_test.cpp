#include "common/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "common/error.h"

using namespace kaio;

namespace {

std::string error_of(const std::string& json) {
  try {
    parse_config(json, "test.json");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::config);
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, DefaultsApplyWhenOnlyTheRepoIsGiven) {
  Config c = parse_config(R"({"source": {"repo": "org/data"}})", "test.json");
  EXPECT_EQ(c.source.repo, "org/data");
  EXPECT_EQ(c.source.revision, "main");
  EXPECT_EQ(c.storage.budget, 10'000'000'000ull);
  EXPECT_EQ(c.decode.frames, 16);
  EXPECT_EQ(c.decode.size, 224);
  EXPECT_EQ(c.train.backend, "auto");
  EXPECT_EQ(c.decode.members, std::vector<std::string>{"*.mp4"});
}

TEST(Config, ReadsSizesDurationsAndLists) {
  Config c = parse_config(R"({
    "source": {"repo": "a/b", "include": ["**/*.tar.gz"], "exclude": "x/*"},
    "fetch": {"stall_timeout": "5s", "bandwidth_limit": "20MB"},
    "storage": {"budget": "200MB", "cache_dir": "/tmp/c"},
    "train": {"model": "tiny", "lr": 0.001, "max_steps": 50}
  })", "test.json");
  EXPECT_EQ(c.source.include, std::vector<std::string>{"**/*.tar.gz"});
  EXPECT_EQ(c.source.exclude, std::vector<std::string>{"x/*"});
  EXPECT_EQ(c.fetch.stall_timeout, std::chrono::seconds(5));
  EXPECT_EQ(c.fetch.bandwidth_limit, 20'000'000ull);
  EXPECT_EQ(c.storage.budget, 200'000'000ull);
  EXPECT_EQ(c.storage.cache_dir, "/tmp/c");
  EXPECT_EQ(c.train.model, "tiny");
  EXPECT_EQ(c.train.max_steps, 50);
}

TEST(Config, UnknownKeyIsNamedWithItsPath) {
  std::string msg = error_of(R"({"source": {"repo": "a/b"}, "storage": {"budgte": "1GB"}})");
  EXPECT_NE(msg.find("test.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("storage.budgte"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown key"), std::string::npos) << msg;
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "extra": 1})").find("extra: unknown key"), std::string::npos);
}

TEST(Config, BadValuesAreNamed) {
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "storage": {"budget": "10 potatoes"}})").find("storage.budget"), std::string::npos);
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "decode": {"frames": "16"}})").find("decode.frames: must be an integer"), std::string::npos);
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "train": {"backend": "tpu"}})").find("train.backend"), std::string::npos);
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "decode": {"frames": 0}})").find("out of range"), std::string::npos);
  EXPECT_NE(error_of(R"({"source": {"repo": "nope"}})").find("source.repo"), std::string::npos);
  EXPECT_NE(error_of(R"({"storage": {}})").find("source.repo: is required"), std::string::npos);
  EXPECT_NE(error_of(R"({"source": )").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(R"([1, 2])").find("must be a JSON object"), std::string::npos);
}

TEST(Config, ShippedConfigsAreValid) {
  const char* src = KAIO_SOURCE_DIR;
  for (const char* name : {"demo.json", "llava-video-178k.json", "physicalai-av.json"}) {
    std::filesystem::path p = std::filesystem::path(src) / "configs" / name;
    EXPECT_NO_THROW(load_config(p)) << p;
  }
}

TEST(Config, MissingFileIsNamed) {
  try {
    load_config("/nonexistent/kaio.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/kaio.json"), std::string::npos);
  }
}
