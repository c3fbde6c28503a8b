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
  })",
                          "test.json");
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
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "storage": {"budget": "10 potatoes"}})").find("storage.budget"),
            std::string::npos);
  EXPECT_NE(
      error_of(R"({"source": {"repo": "a/b"}, "decode": {"frames": "16"}})").find("decode.frames: must be an integer"),
      std::string::npos);
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "train": {"backend": "tpu"}})").find("train.backend"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "decode": {"frames": 0}})").find("out of range"),
            std::string::npos);
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

// A typo is answered with the nearest known key at that level, spelled in full.
TEST(Config, UnknownKeySuggestsTheClosestKnownOne) {
  std::string msg = error_of(R"({"source": {"repo": "a/b"}, "storage": {"budjet": "1GB"}})");
  EXPECT_NE(msg.find("test.json: storage.budjet: unknown key; did you mean storage.budget?"), std::string::npos) << msg;
  // Swapped letters, a wrong case and a misspelt section.
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "fetch": {"parralel_files": 2}})")
                .find("did you mean fetch.parallel_files?"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "train": {"Seed": 2}})").find("did you mean train.seed?"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "storge": {"budget": "1GB"}})")
                .find("storge: unknown key; did you mean storage?"),
            std::string::npos);
  // Nothing near: no guess.
  std::string far = error_of(R"({"source": {"repo": "a/b"}, "storage": {"colour": "blue"}})");
  EXPECT_NE(far.find("storage.colour: unknown key"), std::string::npos) << far;
  EXPECT_EQ(far.find("did you mean"), std::string::npos) << far;
  EXPECT_EQ(error_of(R"({"source": {"repo": "a/b"}, "log": {"xyz": "info"}})").find("did you mean"), std::string::npos);
}

TEST(Config, MetricsListenIsOffByDefaultAndParsed) {
  Config off = parse_config(R"({"source": {"repo": "a/b"}})", "test.json");
  EXPECT_TRUE(off.metrics.listen.empty());
  Config v4 = parse_config(R"({"source": {"repo": "a/b"}, "metrics": {"listen": "127.0.0.1:9464"}})", "test.json");
  EXPECT_EQ(v4.metrics.host, "127.0.0.1");
  EXPECT_EQ(v4.metrics.port, 9464);
  Config v6 = parse_config(R"({"source": {"repo": "a/b"}, "metrics": {"listen": "[::1]:0"}})", "test.json");
  EXPECT_EQ(v6.metrics.host, "::1");
  EXPECT_EQ(v6.metrics.port, 0);
  for (const char* bad :
       {"9464", "127.0.0.1:", ":9464", "127.0.0.1:http", "127.0.0.1:70000", "::1:9464", "127.0.0.1:-1"}) {
    std::string msg = error_of(std::string(R"({"source": {"repo": "a/b"}, "metrics": {"listen": ")") + bad + "\"}}");
    EXPECT_NE(msg.find("metrics.listen"), std::string::npos) << bad << ": " << msg;
  }
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "metrics": {"port": 9464}})").find("metrics.port: unknown key"),
            std::string::npos);
}

TEST(Config, PlaceRankFillsRankPathsAndPartitionsTheFiles) {
  const std::string json = R"({"source": {"repo": "a/b"},
    "storage": {"cache_dir": "/c/{rank}/cache", "state_dir": "/s/r{rank}"},
    "control": {"socket": "/run/kaiod-{rank}.sock"}, "train": {"world": "mpi", "ordered_reduce": true}})";
  Config c = parse_config(json, "test.json");
  EXPECT_EQ(c.train.world, "mpi");
  EXPECT_TRUE(c.train.ordered_reduce);
  place_rank(c, 3, 4);
  EXPECT_EQ(c.storage.cache_dir, "/c/3/cache");
  EXPECT_EQ(c.storage.state_dir, "/s/r3");
  EXPECT_EQ(c.control.socket, "/run/kaiod-3.sock");
  EXPECT_EQ(c.source.partition_index, 3);
  EXPECT_EQ(c.source.partition_count, 4);
  Config alone = parse_config(json, "test.json");
  place_rank(alone, 0, 1);
  EXPECT_EQ(alone.storage.state_dir, "/s/r0");
  EXPECT_EQ(alone.source.partition_count, 1);
  EXPECT_NE(error_of(R"({"source": {"repo": "a/b"}, "train": {"world": "many"}})").find("train.world"),
            std::string::npos);
}

TEST(Config, PlaceRankRefusesAnExplicitPartition) {
  Config c = parse_config(R"({"source": {"repo": "a/b", "partition": {"index": 1, "count": 2}}})", "test.json");
  try {
    place_rank(c, 0, 2);
    FAIL() << "source.partition and ranks composed silently";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::config);
    EXPECT_NE(std::string(e.what()).find("source.partition"), std::string::npos) << e.what();
  }
}
