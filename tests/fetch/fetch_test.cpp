// The Hub client against kaio-hub running as a real process on loopback.
#include <gtest/gtest.h>

#include <cstdlib>
#include <future>

#include "fetch/downloader.h"
#include "fetch/hub.h"
#include "tests/fetch/fetch_run.h"

namespace kaio::test {
namespace {

using fetch::glob_match;

constexpr const char* kToken = "hf_kaioTestSecretToken1234567";

class HubFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_ / "root";
    repo_dir_ = root_ / "org" / "ds";
    write_random(repo_dir_ / "big.bin", 3'000'000, 1);
    write_random(repo_dir_ / "mid.bin", 1'500'000, 2);
    write_random(repo_dir_ / "data" / "one.txt", 1000, 3);
    write_random(repo_dir_ / "data" / "two.txt", 0, 4);
    write_random(repo_dir_ / "sub dir" / "a #%\xc3\xa9.txt", 500, 5);
    write_random(repo_dir_ / "x%41 y.json", 70'000, 6);
    write_random(repo_dir_ / "nested" / "deep" / "c.txt", 4000, 7);
    write_random(repo_dir_ / "top.txt", 10, 8);
    out_ = dir_ / "out";
  }

  std::vector<std::string> fetch_args(const HubProcess& hub, std::vector<std::string> extra = {}) const {
    std::vector<std::string> args = {
        "--repo",           "org/ds", "--out",           out_.string(), "--endpoint",    hub.url(),
        "--split-min-size", "1MB",    "--stall-timeout", "2s",          "--max-backoff", "2s"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // Every repo file is in out_ with the right bytes, and no .part is left.
  void expect_complete() const {
    size_t count = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(repo_dir_)) {
      if (!e.is_regular_file()) continue;
      ++count;
      auto rel = std::filesystem::relative(e.path(), repo_dir_);
      ASSERT_TRUE(std::filesystem::exists(out_ / rel)) << rel;
      EXPECT_EQ(sha256_of(out_ / rel), sha256_of(e.path())) << rel;
    }
    for (const auto& e : std::filesystem::recursive_directory_iterator(out_))
      EXPECT_EQ(e.path().string().find(".part"), std::string::npos) << e.path();
    EXPECT_EQ(count, 8u);
  }

  Sandbox dir_{"fetch"};
  std::filesystem::path root_, repo_dir_, out_;
};

TEST(FetchGlob, StarStaysInFolderDoubleStarCrosses) {
  EXPECT_TRUE(glob_match("*.mp4", "a.mp4"));
  EXPECT_FALSE(glob_match("*.mp4", "x/a.mp4"));
  EXPECT_TRUE(glob_match("**/*.mp4", "a.mp4"));
  EXPECT_TRUE(glob_match("**/*.mp4", "x/y/a.mp4"));
  EXPECT_TRUE(glob_match("x/**", "x/y/z.tar.gz"));
  EXPECT_FALSE(glob_match("x/**", "xy/z"));
  EXPECT_TRUE(glob_match("sub/*_videos_?.tar.gz", "sub/s_videos_1.tar.gz"));
  EXPECT_FALSE(glob_match("sub/*_videos_?.tar.gz", "sub/s_videos_12.tar.gz"));
  EXPECT_FALSE(glob_match("a?b", "a/b"));
  EXPECT_TRUE(fetch::selected({}, {"*.json"}, "a.txt"));
  EXPECT_FALSE(fetch::selected({"**"}, {"*.json"}, "a.json"));
}

TEST(FetchConfig, EndpointAndTokenResolution) {
  SourceConfig s;
  ::setenv("HF_ENDPOINT", "http://mirror.example/", 1);
  EXPECT_EQ(fetch::resolve_endpoint(s), "http://mirror.example");
  s.endpoint = "http://cfg.example//";
  EXPECT_EQ(fetch::resolve_endpoint(s), "http://cfg.example");
  ::unsetenv("HF_ENDPOINT");
  s.endpoint.clear();
  EXPECT_EQ(fetch::resolve_endpoint(s), "https://huggingface.co");

  Sandbox dir("token");
  std::ofstream(dir / "tok") << "  hf_fromfile123  \n";
  ::setenv("HF_TOKEN", " hf_fromenv456 ", 1);
  EXPECT_EQ(fetch::resolve_token(s).value_or(""), "hf_fromenv456");
  s.token_file = (dir / "tok").string();
  EXPECT_EQ(fetch::resolve_token(s).value_or(""), "hf_fromfile123");
  s.token_file.clear();
  ::unsetenv("HF_TOKEN");
  ::setenv("HF_TOKEN_PATH", (dir / "tok").c_str(), 1);
  EXPECT_EQ(fetch::resolve_token(s).value_or(""), "hf_fromfile123");
  ::unsetenv("HF_TOKEN_PATH");
  ::setenv("HOME", dir.path().c_str(), 1);
  ::unsetenv("HF_HOME");
  EXPECT_FALSE(fetch::resolve_token(s).has_value());
  s.token_file = (dir / "missing").string();
  EXPECT_THROW(fetch::resolve_token(s), Error);
}

TEST_F(HubFixture, KaioHubRevisionsPaginationAndNames) {
  HubProcess hub(root_, {"--page-size", "3", "--lfs-threshold", "1000000"});
  ASSERT_TRUE(hub.ok());
  fetch::HubClient client(hub.url(), std::nullopt, FetchConfig{});
  std::string sha = client.resolve_revision("org/ds", "main");
  EXPECT_EQ(sha.size(), 40u);
  EXPECT_EQ(client.resolve_revision("org/ds", sha), sha);
  try {
    client.resolve_revision("org/ds", "refs/pr/1");
    FAIL() << "unknown revision resolved";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
    EXPECT_NE(std::string(e.what()).find("RevisionNotFound"), std::string::npos) << e.what();
  }
  EXPECT_THROW(client.resolve_revision("org/nope", "main"), Error);
  uint64_t before = hub.stats()["requests"];
  auto files = client.list_files("org/ds", sha, {}, {});
  uint64_t pages = hub.stats()["requests"].get<uint64_t>() - before - 1;  // minus the stats call
  ASSERT_EQ(files.size(), 8u);
  EXPECT_GE(pages, 4u);  // 8 files + 4 folders at 3 per page
  std::set<std::string> names;
  for (const auto& f : files) names.insert(f.path);
  EXPECT_TRUE(names.count("sub dir/a #%\xc3\xa9.txt"));
  EXPECT_TRUE(names.count("x%41 y.json"));
  for (const auto& f : files) {
    EXPECT_EQ(f.size, std::filesystem::file_size(repo_dir_ / f.path)) << f.path;
    EXPECT_EQ(f.sha256.empty(), f.size < 1'000'000) << f.path;
  }
  auto txt = client.list_files("org/ds", sha, {"**/*.txt"}, {"nested/**"});
  EXPECT_EQ(txt.size(), 4u);
}

TEST_F(HubFixture, StreamResumesThroughDropsAndVerifies) {
  HubProcess hub(root_, {"--faults", R"({"drop_after": 700000, "drop_count": 3})"});
  ASSERT_TRUE(hub.ok());
  FetchConfig config;
  config.max_backoff = std::chrono::milliseconds(1000);
  fetch::HubClient client(hub.url(), std::nullopt, config);
  std::string sha = client.resolve_revision("org/ds", "main");
  for (const auto& f : client.list_files("org/ds", sha, {"big.bin", "x*"}, {})) {
    auto stream = client.open_stream("org/ds", sha, f);
    fetch::Digest digest(fetch::HashKind::sha256);
    std::vector<std::byte> buf(100'000);
    while (size_t n = stream->read(buf)) digest.update(buf.data(), n);
    EXPECT_EQ(digest.hex(), sha256_of(repo_dir_ / f.path)) << f.path;
  }
  EXPECT_GE(hub.stats()["faults"]["drop"].get<int>(), 3);
}

TEST_F(HubFixture, StreamReportsCorruptionAtEnd) {
  HubProcess hub(root_, {"--faults", R"({"corrupt_first": true})"});
  ASSERT_TRUE(hub.ok());
  fetch::HubClient client(hub.url(), std::nullopt, FetchConfig{});
  std::string sha = client.resolve_revision("org/ds", "main");
  auto files = client.list_files("org/ds", sha, {"big.bin"}, {});
  ASSERT_EQ(files.size(), 1u);
  auto stream = client.open_stream("org/ds", sha, files[0]);
  std::vector<std::byte> buf(1 << 16);
  try {
    while (stream->read(buf) > 0) {
    }
    FAIL() << "a flipped byte went unnoticed";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt);
  }
}

struct FaultCase {
  const char* name;
  const char* faults;
  const char* counter;
};

void PrintTo(const FaultCase& c, std::ostream* os) {
  *os << c.name;
}

class FetchFaults : public HubFixture, public ::testing::WithParamInterface<FaultCase> {};

TEST_P(FetchFaults, EveryFileArrivesIntact) {
  HubProcess hub(root_, {"--faults", GetParam().faults, "--seed", "7"});
  ASSERT_TRUE(hub.ok());
  CommandResult r = run_fetch(fetch_args(hub));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_complete();
  auto stats = hub.stats();
  if (std::string(GetParam().counter) != "none") {
    EXPECT_GT(stats["faults"][GetParam().counter].get<int>(), 0) << stats.dump();
  }
  EXPECT_EQ(stats["cdn_requests_with_authorization"], 0);
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, FetchFaults,
    ::testing::Values(FaultCase{"none", "{}", "none"},
                      FaultCase{"drop", R"({"drop_after": 300000, "drop_count": 6})", "drop"},
                      FaultCase{"rate429", R"({"rate_429": 0.3, "retry_after": 1})", "429"},
                      FaultCase{"rate5xx", R"({"rate_5xx": 0.3})", "5xx"},
                      FaultCase{"stall", R"({"stall_after": 200000, "stall_ms": 5000, "stall_count": 2})", "stall"},
                      FaultCase{"corrupt", R"({"corrupt_first": true})", "corrupt"},
                      FaultCase{"throttle", R"({"throttle_bps": 2000000})", "none"},
                      // Signed URLs that live 1.5 s (under kaioctl fetch's 60 s margin, so every request resolves
                      // again) and four CDN requests refused as expired whatever their URL says.
                      FaultCase{"expired",
                                R"({"url_lifetime_ms": 1500, "cdn_expired_count": 4, "throttle_bps": 1000000})",
                                "expired_url"},
                      FaultCase{"mixed", R"({"drop_after": 250000, "drop_count": 4, "rate_429": 0.15, "rate_5xx": 0.15,
                                              "stall_after": 100000, "stall_ms": 4000, "stall_count": 1, "corrupt_first": true})",
                                "drop"}),
    [](const auto& info) { return std::string(info.param.name); });

// The outage starts once kaio-hub has sent a quarter of the repo (observed,
// not timed), so it always lands mid-download whatever the machine's speed.
TEST_F(HubFixture, OutageOfTwentySecondsMidDownloadHeals) {
  HubProcess hub(root_, {"--faults", R"({"throttle_bps": 250000})"});
  ASSERT_TRUE(hub.ok());
  uint64_t total = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(repo_dir_))
    if (e.is_regular_file()) total += e.file_size();
  auto running = std::async(std::launch::async, [&] { return run_fetch(fetch_args(hub)); });
  uint64_t sent = 0;
  auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (std::chrono::steady_clock::now() < limit &&
         running.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) {
    sent = hub.stats()["bytes_sent"].get<uint64_t>();
    if (sent >= total / 4) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // poll interval only
  }
  ASSERT_GE(sent, total / 4) << "kaio-hub sent " << sent << " of " << total << " bytes before the outage could start";
  hub.faults({{"outage_ms", 20000}});
  uint64_t sent_at_cut = hub.stats()["bytes_sent"].get<uint64_t>();
  EXPECT_LT(sent_at_cut, total) << "everything was sent before the outage: it cut nothing";
  CommandResult r = running.get();
  EXPECT_EQ(r.exit_code, 0) << r.output;
  expect_complete();
  EXPECT_GT(hub.stats()["faults"]["outage_close"].get<int>(), 0);
}

TEST_F(HubFixture, GatedRepoNeedsTokenAndNeverLeaksIt) {
  HubProcess hub(root_, {"--token", kToken});
  ASSERT_TRUE(hub.ok());
  CommandResult denied = run_fetch(fetch_args(hub, {"--include", "top.txt"}), "env -u HF_TOKEN HOME=" + dir_.string());
  EXPECT_EQ(denied.exit_code, 1) << denied.output;
  EXPECT_NE(denied.output.find("GatedRepo"), std::string::npos) << denied.output;
  EXPECT_NE(denied.output.find("HF_TOKEN"), std::string::npos) << denied.output;

  CommandResult wrong = run_fetch(fetch_args(hub, {"--include", "top.txt"}), "HF_TOKEN=hf_wrongWrongWrong");
  EXPECT_EQ(wrong.exit_code, 1) << wrong.output;

  CommandResult ok = run_fetch(fetch_args(hub, {"--log-level", "debug"}), std::string("HF_TOKEN=") + kToken);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  expect_complete();
  EXPECT_EQ(ok.output.find(kToken), std::string::npos);
  auto stats = hub.stats();
  EXPECT_GT(stats["cdn_requests"].get<int>(), 0);
  EXPECT_EQ(stats["cdn_requests_with_authorization"].get<int>(), 0);
}

TEST_F(HubFixture, MissingRepoAndEntryFailClearly) {
  HubProcess hub(root_);
  ASSERT_TRUE(hub.ok());
  CommandResult r = run_fetch({"--repo", "org/missing", "--out", out_.string(), "--endpoint", hub.url()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("RepoNotFound"), std::string::npos) << r.output;
  EXPECT_EQ(run_fetch({"--repo", "org/ds"}).exit_code, 2);

  fetch::HubClient client(hub.url(), std::nullopt, FetchConfig{});
  std::string sha = client.resolve_revision("org/ds", "main");
  fetch::Downloader downloader(hub.url(), std::nullopt, FetchConfig{});
  std::promise<fetch::DownloadResult> done;
  downloader.submit({"org/ds", sha, fetch::RepoFile{"no/such file.bin", 10, "", ""}, out_ / "x.bin"},
                    [&](const fetch::DownloadResult& r) { done.set_value(r); });
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(300)), std::future_status::ready);
  auto result = future.get();
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.kind, ErrorKind::not_found);
  EXPECT_NE(result.message.find("EntryNotFound"), std::string::npos) << result.message;
  EXPECT_FALSE(std::filesystem::exists(out_ / "x.bin.part"));
}

TEST_F(HubFixture, PinnedRevisionAndResumeFromPart) {
  HubProcess hub(root_);
  ASSERT_TRUE(hub.ok());
  fetch::HubClient client(hub.url(), std::nullopt, FetchConfig{});
  std::string sha = client.resolve_revision("org/ds", "main");
  // A .part holding the first third of big.bin, as an interrupted run leaves it.
  std::filesystem::create_directories(out_);
  {
    std::ifstream in(repo_dir_ / "big.bin", std::ios::binary);
    std::string head(1'000'000, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream(out_ / "big.bin.part", std::ios::binary) << head;
  }
  CommandResult r = run_fetch(fetch_args(hub, {"--revision", sha, "--include", "big.bin", "--split", "1"}));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(sha256_of(out_ / "big.bin"), sha256_of(repo_dir_ / "big.bin"));
  auto stats = hub.stats();
  EXPECT_GE(stats["range_requests"].get<int>(), 1);
  EXPECT_EQ(stats["bytes_sent"].get<uint64_t>(), 2'000'000u);  // only the missing two thirds
  EXPECT_FALSE(std::filesystem::exists(out_ / "big.bin.part"));
}

TEST_F(HubFixture, DownloaderPausesKeepsPartsAndResumesSplit) {
  HubProcess hub(root_, {"--faults", R"({"throttle_bps": 400000})"});
  ASSERT_TRUE(hub.ok());
  fetch::HubClient client(hub.url(), std::nullopt, FetchConfig{});
  std::string sha = client.resolve_revision("org/ds", "main");
  auto files = client.list_files("org/ds", sha, {"big.bin"}, {});
  ASSERT_EQ(files.size(), 1u);
  FetchConfig config;
  config.split = 3;
  config.split_min_size = 1'000'000;
  config.stall_timeout = std::chrono::milliseconds(2000);
  fetch::Downloader downloader(hub.url(), std::nullopt, config);
  std::promise<fetch::DownloadResult> done;
  downloader.submit({"org/ds", sha, files[0], out_ / "big.bin"},
                    [&](const fetch::DownloadResult& r) { done.set_value(r); });
  // Pause once bytes have arrived (observed, not timed).
  auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (downloader.progress().done == 0 && std::chrono::steady_clock::now() < limit)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // poll interval only
  ASSERT_GT(downloader.progress().done, 0u) << "no byte arrived in 300 s";
  downloader.pause();
  // The pause takes effect when the transfer loop sees it: wait until the
  // count holds still over two polls 2 s apart, longer than a busy machine
  // leaves a running transfer without a byte (bounded: if it never stops,
  // the pause does not work).
  uint64_t last = downloader.progress().done;
  limit = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (;;) {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    uint64_t now = downloader.progress().done;
    if (now == last) break;
    ASSERT_LT(std::chrono::steady_clock::now(), limit) << "bytes kept arriving for 120 s after pause()";
    last = now;
  }
  auto paused = downloader.progress();
  EXPECT_TRUE(std::filesystem::exists(out_ / "big.bin.part"));
  EXPECT_TRUE(std::filesystem::exists(out_ / "big.bin.part.ranges"));
  EXPECT_EQ(paused.total, 3'000'000u);
  EXPECT_GT(paused.done, 0u);
  EXPECT_LT(paused.done, 3'000'000u);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(downloader.progress().done, paused.done);  // nothing moves while paused
  downloader.resume();
  auto future = done.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(600)), std::future_status::ready);
  auto result = future.get();
  EXPECT_TRUE(result.ok) << result.message;
  EXPECT_EQ(sha256_of(out_ / "big.bin"), sha256_of(repo_dir_ / "big.bin"));
  EXPECT_FALSE(std::filesystem::exists(out_ / "big.bin.part.ranges"));
  EXPECT_GE(hub.stats()["range_requests"].get<int>(), 6);  // 3 parts, each started twice
}

TEST_F(HubFixture, OutageShowsAsWaitingAndCancelStopsRetries) {
  HubProcess hub(root_, {"--faults", R"({"outage_ms": 3600000})"});  // outlasts every bound below
  ASSERT_TRUE(hub.ok());
  FetchConfig config;
  config.max_backoff = std::chrono::milliseconds(1000);
  fetch::HubClient client(hub.url(), std::nullopt, config);
  EXPECT_EQ(client.network_status().state, fetch::NetworkStatus::State::ok);
  auto resolving = std::async(std::launch::async, [&] { return client.resolve_revision("org/ds", "main"); });
  // Until the client reports the outage (observed, not timed).
  auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  while (client.network_status().state == fetch::NetworkStatus::State::ok && std::chrono::steady_clock::now() < limit)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto status = client.network_status();
  EXPECT_EQ(status.state, fetch::NetworkStatus::State::waiting_network);
  EXPECT_NE(status.reason.find("org/ds"), std::string::npos) << status.reason;
  client.cancel();
  ASSERT_EQ(resolving.wait_for(std::chrono::seconds(120)), std::future_status::ready);
  try {
    resolving.get();
    FAIL() << "resolved during an outage";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::cancelled);
  }
}

}  // namespace
}  // namespace kaio::test
