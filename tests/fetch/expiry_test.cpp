// Signed CDN URLs that expire, and files too large for one unranged GET, with
// the Hub client against kaio-hub as a real process on loopback (issue 14,
// item 9). kaio-hub signs its redirects with Expires= and answers 403
// AccessDenied "Request has expired" once that has passed (or the URL was
// revoked), and refuses unranged GETs above a size, as the Hub does.
#include <gtest/gtest.h>

#include <future>

#include "fetch/downloader.h"
#include "fetch/http.h"
#include "fetch/hub.h"
#include "tests/fetch/fetch_run.h"

namespace kaio::test {
namespace {

using namespace std::chrono_literals;
using State = fetch::NetworkStatus::State;

constexpr const char* kToken = "hf_kaioExpiryTestToken98765";

class HubExpiry : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_ / "root";
    repo_dir_ = root_ / "org" / "ds";
    write_random(repo_dir_ / "big.bin", 3'000'000, 11);
    write_random(repo_dir_ / "mid.bin", 1'500'000, 12);
    write_random(repo_dir_ / "top.txt", 10, 13);
    out_ = dir_ / "out";
  }

  // The file's one entry in the listing.
  static fetch::RepoFile listed(fetch::HubClient& client, const std::string& sha, const std::string& path) {
    auto files = client.list_files("org/ds", sha, {path}, {});
    if (files.size() != 1) throw std::runtime_error("not listed: " + path);
    return files[0];
  }

  // Submits one file and returns the future of its result.
  static std::future<fetch::DownloadResult> submit(fetch::Downloader& d, const std::string& sha,
                                                   const fetch::RepoFile& f, const std::filesystem::path& dest) {
    auto done = std::make_shared<std::promise<fetch::DownloadResult>>();
    d.submit({"org/ds", sha, f, dest}, [done](const fetch::DownloadResult& r) { done->set_value(r); });
    return done->get_future();
  }

  // Polls `ready` every 50 ms for up to `bound`; true when it held.
  template <typename F>
  static bool wait_until(F ready, std::chrono::seconds bound) {
    auto until = std::chrono::steady_clock::now() + bound;
    while (std::chrono::steady_clock::now() < until) {
      if (ready()) return true;
      std::this_thread::sleep_for(50ms);
    }
    return ready();
  }

  // Bytes of `path` on disk so far (0 when it is not active).
  static uint64_t file_done(const fetch::Downloader& d, const std::string& path) {
    for (const auto& f : d.progress().files)
      if (f.path == path) return f.done;
    return 0;
  }

  // Until the pause has taken hold: no byte arrives for half a second.
  static bool wait_paused(fetch::Downloader& d) {
    uint64_t last = d.progress().done;
    auto still_since = std::chrono::steady_clock::now();
    return wait_until(
        [&] {
          uint64_t now = d.progress().done;
          if (now != last) {
            last = now;
            still_since = std::chrono::steady_clock::now();
          }
          return std::chrono::steady_clock::now() - still_since >= 500ms;
        },
        30s);
  }

  // Until every URL kaio-hub has signed so far has expired, by its own clock.
  static bool wait_urls_expired(const HubProcess& hub) {
    return wait_until(
        [&] {
          auto s = hub.stats();
          return s["now_ms"].get<int64_t>() >= s["signed_urls_valid_until_ms"].get<int64_t>();
        },
        60s);
  }

  static std::string read_all(kaio::ByteSource& source, size_t limit = SIZE_MAX) {
    std::string data;
    std::vector<std::byte> buf(size_t{64} * 1024);
    while (data.size() < limit) {
      size_t n = source.read(std::span(buf.data(), std::min(buf.size(), limit - data.size())));
      if (n == 0) break;
      data.append(reinterpret_cast<const char*>(buf.data()), n);
    }
    return data;
  }

  static std::string sha256_text(const std::string& data) {
    fetch::Digest d(fetch::HashKind::sha256);
    d.update(data.data(), data.size());
    return d.hex();
  }

  Sandbox dir_{"expiry"};
  std::filesystem::path root_, repo_dir_, out_;
};

TEST(HubSignedUrl, ExpiryIsReadFromTheUrlAndAgedOnTheSteadyClock) {
  using fetch::http::url_expiry;
  using std::chrono::system_clock;
  auto at = [](int64_t s) { return system_clock::time_point(std::chrono::seconds(s)); };
  EXPECT_EQ(url_expiry("https://cdn.example/x?Expires=1700000000&Signature=abc&Key-Pair-Id=K"), at(1700000000));
  // The Xet bridge's S3-style signature: X-Amz-Date plus X-Amz-Expires.
  EXPECT_EQ(url_expiry("https://cas-bridge.example/x?X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=s"),
            at(1735693200));
  // Both: the earlier wins.
  EXPECT_EQ(url_expiry("https://c/x?X-Amz-Date=20250101T000000Z&X-Amz-Expires=3600&Expires=1735690000"),
            at(1735690000));
  EXPECT_FALSE(url_expiry("https://c/x?sig=kaio").has_value());
  EXPECT_FALSE(url_expiry("https://c/x?Expires=soon").has_value());
  EXPECT_FALSE(url_expiry("https://c/x?X-Amz-Date=2025&X-Amz-Expires=3600").has_value());
  EXPECT_FALSE(url_expiry("https://c/Expires=1700000000").has_value());

  auto now = std::chrono::steady_clock::now();
  fetch::http::Headers redirect;
  // No expiry in the URL: only the age counts.
  auto plain = fetch::http::signed_url("https://c/x?sig=1", redirect, now);
  EXPECT_TRUE(plain.usable(now + 9min, 10min, 60s));
  EXPECT_FALSE(plain.usable(now + 10min, 10min, 60s));
  // Expires 120 s after the redirect's Date: fresh until the margin before it,
  // whatever our own clock says (the Date is the signer's clock).
  int64_t date = 1'700'000'000;
  char text[64];
  time_t t = static_cast<time_t>(date);
  struct tm tm {};
  ::gmtime_r(&t, &tm);
  std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  redirect.values["date"] = text;
  auto timed = fetch::http::signed_url("https://c/x?Expires=" + std::to_string(date + 120), redirect, now);
  ASSERT_TRUE(timed.expires.has_value());
  EXPECT_TRUE(timed.usable(now + 50s, 10min, 60s));
  EXPECT_FALSE(timed.usable(now + 60s, 10min, 60s));  // 120 s less the second Date may be behind, less the margin
  EXPECT_FALSE(fetch::http::SignedUrl{}.usable(now, 10min, 60s));
  EXPECT_TRUE(fetch::http::is_cdn_refusal(403));
  EXPECT_FALSE(fetch::http::is_cdn_refusal(404));
  EXPECT_FALSE(fetch::http::is_cdn_refusal(503));
}

// A split download paused until every URL kaio-hub signed has expired: the
// resumed parts must not use the stored URL (kaio-hub would answer 403) but
// resolve again first, and the file completes without an auth state.
TEST_F(HubExpiry, DownloadPartsOutlivingTheUrlResolveAgainFirst) {
  HubProcess hub(root_, {"--faults", R"({"throttle_bps": 300000, "url_lifetime_ms": 2000})"});
  ASSERT_TRUE(hub.ok());
  fetch::HubClient client(hub.url(), std::nullopt, FetchConfig{});
  std::string sha = client.resolve_revision("org/ds", "main");
  auto big = listed(client, sha, "big.bin");
  FetchConfig config;
  config.split = 3;
  config.split_min_size = 1'000'000;
  config.stall_timeout = 5s;
  config.max_backoff = 1s;
  fetch::HubTuning tuning;
  // kaio-hub's URLs live 2 s, not an hour; 1 s of margin covers a busy
  // machine's delay between the check and the request reaching kaio-hub.
  tuning.url_expiry_margin = 1s;
  fetch::Downloader downloader(hub.url(), std::nullopt, config, nullptr, tuning);
  auto result = submit(downloader, sha, big, out_ / "big.bin");
  ASSERT_TRUE(wait_until([&] { return file_done(downloader, "big.bin") > 0; }, 60s)) << "no byte arrived";
  downloader.pause();
  ASSERT_TRUE(wait_paused(downloader));
  ASSERT_TRUE(wait_urls_expired(hub));
  uint64_t resolves_before = hub.stats()["resolves"];
  EXPECT_LT(file_done(downloader, "big.bin"), big.size) << "the pause came too late to leave parts to resume";
  downloader.resume();
  ASSERT_EQ(result.wait_for(120s), std::future_status::ready);
  auto r = result.get();
  auto stats = hub.stats();
  std::printf(
      "split download paused past the URL lifetime: %s, %llu resolves (%llu after the pause), %llu CDN requests, %llu "
      "refused as expired\n",
      r.ok ? "completed" : r.message.c_str(), stats.value("resolves", 0ull),
      stats.value("resolves", 0ull) - resolves_before, stats.value("cdn_requests", 0ull),
      stats.value("expired_urls", 0ull));
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_EQ(sha256_of(out_ / "big.bin"), sha256_of(repo_dir_ / "big.bin"));
  EXPECT_NE(downloader.network_status().state, State::auth_required) << downloader.network_status().reason;
  EXPECT_EQ(stats["expired_urls"].get<int>(), 0) << "a URL past its Expires was used: " << stats.dump();
  EXPECT_GT(stats["resolves"].get<uint64_t>(), resolves_before) << "the resumed parts did not resolve again";
}

// A 403 from the CDN host (the URL expired or was revoked before its Expires)
// is answered by resolving again, never taken as the Hub refusing the token;
// a 403 from the Hub itself still is an auth failure.
TEST_F(HubExpiry, CdnRefusalIsRetriedThroughResolveAndIsNotAuth) {
  HubProcess hub(root_, {"--token", kToken, "--faults", R"({"throttle_bps": 600000, "cdn_expired_count": 2})"});
  ASSERT_TRUE(hub.ok());
  fetch::HubClient client(hub.url(), std::string(kToken), FetchConfig{});
  std::string sha = client.resolve_revision("org/ds", "main");
  auto big = listed(client, sha, "big.bin");
  auto mid = listed(client, sha, "mid.bin");
  FetchConfig config;
  config.split = 3;
  config.split_min_size = 1'000'000;
  config.max_backoff = 1s;
  fetch::Downloader downloader(hub.url(), std::string(kToken), config);
  // The first two CDN requests are refused as expired.
  auto first = submit(downloader, sha, mid, out_ / "mid.bin");
  ASSERT_EQ(first.wait_for(120s), std::future_status::ready);
  auto r1 = first.get();
  EXPECT_TRUE(r1.ok) << r1.message;
  EXPECT_EQ(hub.stats()["expired_urls"].get<int>(), 2);
  // Mid-file, every URL signed so far is revoked: the parts resumed with the
  // stored (and by its age still fresh) URL are refused and resolve again.
  auto second = submit(downloader, sha, big, out_ / "big.bin");
  ASSERT_TRUE(wait_until([&] { return file_done(downloader, "big.bin") > 0; }, 60s)) << "no byte arrived";
  downloader.pause();
  ASSERT_TRUE(wait_paused(downloader));
  EXPECT_LT(file_done(downloader, "big.bin"), big.size) << "the pause came too late to leave parts to resume";
  hub.faults({{"expire_urls", true}});
  downloader.resume();
  ASSERT_EQ(second.wait_for(120s), std::future_status::ready);
  auto r2 = second.get();
  auto stats = hub.stats();
  std::printf("CDN refusals: %llu answered 403 Request has expired; downloads %s, %s after %llu resolves\n",
              stats.value("expired_urls", 0ull), r1.ok ? "completed" : r1.message.c_str(),
              r2.ok ? "completed" : r2.message.c_str(), stats.value("resolves", 0ull));
  EXPECT_TRUE(r2.ok) << r2.message;
  if (r1.ok) {
    EXPECT_EQ(sha256_of(out_ / "mid.bin"), sha256_of(repo_dir_ / "mid.bin"));
  }
  if (r2.ok) {
    EXPECT_EQ(sha256_of(out_ / "big.bin"), sha256_of(repo_dir_ / "big.bin"));
  }
  EXPECT_NE(downloader.network_status().state, State::auth_required) << downloader.network_status().reason;
  EXPECT_GE(stats["expired_urls"].get<int>(), 3) << stats.dump();  // 2 forced, at least 1 revoked
  EXPECT_EQ(stats["cdn_requests_with_authorization"].get<int>(), 0);

  // The Hub's own 403 (a wrong token) is still auth.
  fetch::Downloader wrong(hub.url(), std::string("hf_wrongWrongWrong"), config);
  auto denied = submit(wrong, sha, big, out_ / "denied.bin").get();
  EXPECT_FALSE(denied.ok);
  EXPECT_EQ(denied.kind, ErrorKind::auth) << denied.message;
  EXPECT_EQ(wrong.network_status().state, State::auth_required);
  EXPECT_EQ(denied.message.find("hf_wrong"), std::string::npos) << denied.message;
}

TEST_F(HubExpiry, StreamCdnRefusalIsRetriedThroughResolveAndIsNotAuth) {
  HubProcess hub(root_, {"--token", kToken, "--faults", R"({"cdn_expired_count": 1})"});
  ASSERT_TRUE(hub.ok());
  fetch::HubClient client(hub.url(), std::string(kToken), FetchConfig{});
  std::string sha = client.resolve_revision("org/ds", "main");
  auto stream = client.open_stream("org/ds", sha, listed(client, sha, "big.bin"));
  std::string data;
  try {
    data = read_all(*stream);
  } catch (const Error& e) {
    FAIL() << "the stream failed: " << e.what();
  }
  EXPECT_EQ(sha256_text(data), sha256_of(repo_dir_ / "big.bin"));
  EXPECT_NE(client.network_status().state, State::auth_required) << client.network_status().reason;
  auto stats = hub.stats();
  EXPECT_EQ(stats["expired_urls"].get<int>(), 1);
  EXPECT_EQ(stats["resolves"].get<int>(), 2) << "one re-resolve after the refusal";
}

// A stream whose reader stops for longer than the URL lifetime: kaio-hub cuts
// the stalled body (as a CDN's send timeout does) after the URL expired, and the
// reconnect must resolve again first. Before the pause, reconnects after drops
// reuse the still-fresh URL (every resolve counts against the Hub's quota).
TEST_F(HubExpiry, StreamPausedLongerThanTheUrlLifetimeContinues) {
  write_random(repo_dir_ / "huge.bin", 40'000'000, 14);  // more than the stream buffer and the socket buffers hold
  // URLs live 3 s (4 at most, Expires being whole seconds); a reader that takes
  // nothing for 5 s has its body cut, so by then the URL has expired.
  HubProcess hub(
      root_,
      {"--faults", R"({"url_lifetime_ms": 3000, "send_timeout_ms": 5000, "drop_after": 2000000, "drop_count": 2})"});
  ASSERT_TRUE(hub.ok());
  fetch::HubTuning tuning;
  tuning.url_expiry_margin = 1s;  // as above: a busy machine's delay
  fetch::HubClient client(hub.url(), std::nullopt, FetchConfig{}, tuning);
  std::string sha = client.resolve_revision("org/ds", "main");
  auto huge = listed(client, sha, "huge.bin");
  auto stream = client.open_stream("org/ds", sha, huge);
  std::string data = read_all(*stream, 1'000'000);
  ASSERT_EQ(data.size(), 1'000'000u);
  // The pause: wait for kaio-hub to cut the body nobody reads.
  ASSERT_TRUE(wait_until([&] { return hub.stats()["send_timeouts"].get<int>() >= 1; }, 90s)) << hub.stats().dump();
  auto paused = hub.stats();
  EXPECT_GE(paused["now_ms"].get<int64_t>(), paused["signed_urls_valid_until_ms"].get<int64_t>())
      << "the URL outlived the pause";
  try {
    data += read_all(*stream);
  } catch (const Error& e) {
    FAIL() << "the stream failed after the pause: " << e.what();
  }
  auto stats = hub.stats();
  std::printf(
      "stream paused past the URL lifetime: %zu bytes, %llu drops, %llu cut by send timeout, %llu CDN requests, %llu "
      "resolves, %llu refused as expired\n",
      data.size(), stats["faults"].value("drop", 0ull), stats.value("send_timeouts", 0ull),
      stats.value("cdn_requests", 0ull), stats.value("resolves", 0ull), stats.value("expired_urls", 0ull));
  EXPECT_EQ(data.size(), huge.size);
  EXPECT_EQ(sha256_text(data), huge.sha256);
  EXPECT_NE(client.network_status().state, State::auth_required) << client.network_status().reason;
  EXPECT_EQ(stats["faults"]["drop"].get<int>(), 2);
  EXPECT_EQ(stats["expired_urls"].get<int>(), 0) << "a reconnect used a URL past its Expires";
  EXPECT_GE(stats["resolves"].get<int>(), 2) << "the reconnect after the pause did not resolve again";
  EXPECT_LT(stats["resolves"].get<int>(), stats["cdn_requests"].get<int>())
      << "every reconnect resolved again: the fresh URL was not reused";
}

// Files over the unranged limit (50 GB on the Hub; lowered here) are only ever
// requested with Range, whether downloaded on one connection or streamed.
TEST_F(HubExpiry, LargeFileIsOnlyFetchedWithRanges) {
  // big.bin goes through the CDN redirect; mid.bin (under the LFS threshold) is served by the Hub itself.
  HubProcess hub(root_, {"--lfs-threshold", "2000000", "--faults", R"({"unranged_limit": 1000000})"});
  ASSERT_TRUE(hub.ok());
  fetch::HubTuning tuning;
  tuning.unranged_limit = 1'000'000;
  fetch::HubClient client(hub.url(), std::nullopt, FetchConfig{}, tuning);
  std::string sha = client.resolve_revision("org/ds", "main");
  FetchConfig config;  // split_min_size 64 MB: both files on one connection
  fetch::Downloader downloader(hub.url(), std::nullopt, config, nullptr, tuning);
  for (const char* name : {"big.bin", "mid.bin", "top.txt"}) {
    auto f = listed(client, sha, name);
    auto r = submit(downloader, sha, f, out_ / name);
    ASSERT_EQ(r.wait_for(60s), std::future_status::ready) << name;
    auto result = r.get();
    EXPECT_TRUE(result.ok) << result.message;
    if (result.ok) {
      EXPECT_EQ(sha256_of(out_ / name), sha256_of(repo_dir_ / name)) << name;
    }
    auto stream = client.open_stream("org/ds", sha, f);
    try {
      EXPECT_EQ(sha256_text(read_all(*stream)), sha256_of(repo_dir_ / name)) << name;
    } catch (const Error& e) {
      ADD_FAILURE() << "stream of " << name << ": " << e.what();
    }
  }
  auto stats = hub.stats();
  std::printf("files over the unranged limit: %llu range requests, %llu unranged GETs refused\n",
              stats.value("range_requests", 0ull), stats.value("unranged_refused", 0ull));
  EXPECT_EQ(stats["unranged_refused"].get<int>(), 0) << stats.dump();
  EXPECT_GE(stats["range_requests"].get<int>(), 4);  // two files, downloaded and streamed
}

}  // namespace
}  // namespace kaio::test
