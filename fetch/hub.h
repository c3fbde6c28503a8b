#pragma once
// Client for the Hugging Face Hub's HTTP protocol (datasets): revision -> commit,
// file listing with globs, and streaming one file with resume and verification.
// Bulk downloads to disk go through Downloader (fetch/downloader.h).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/io.h"

namespace kaio::fetch {

struct RepoFile {
  std::string path;
  uint64_t size = 0;
  std::string git_oid;  // git blob sha1 (of the LFS pointer for LFS files)
  std::string sha256;   // content sha256; empty when not LFS
};

// config, else $HF_ENDPOINT, else https://huggingface.co; trailing '/' stripped.
std::string resolve_endpoint(const kaio::SourceConfig& source);
// token_file, else $HF_TOKEN, else the file at $HF_TOKEN_PATH, else
// $HF_HOME/token (~/.cache/huggingface/token); whitespace stripped; registered
// with kaio::add_secret(). nullopt when none is set.
std::optional<std::string> resolve_token(const kaio::SourceConfig& source);

// '*' matches within a folder, '**' across folders, '?' one character.
bool glob_match(std::string_view pattern, std::string_view path);
// Empty include means everything; exclude wins.
bool selected(const std::vector<std::string>& include, const std::vector<std::string>& exclude, std::string_view path);

// Internal limits that follow the Hub's behaviour rather than the user's
// choices; tests lower them to exercise the paths in seconds.
struct HubTuning {
  // A signed CDN URL older than this is resolved again through the Hub before
  // it is used for a new request (a part, a resume, a retry, a reconnect).
  std::chrono::milliseconds url_max_age{std::chrono::minutes(10)};
  // ... and so is one whose Expires is less than this away.
  std::chrono::milliseconds url_expiry_margin{std::chrono::seconds(60)};
  // Files larger than this are only ever requested with Range (the Hub refuses
  // one unranged GET of a file over 50 GB when it is stored on Xet).
  uint64_t unranged_limit = 50'000'000'000;
};

struct NetworkStatus {
  enum class State { ok, waiting_network, auth_required } state = State::ok;
  std::string reason;
  std::chrono::system_clock::time_point next_retry{};
};

// Thread-safe record of the last network outcome, shared by HubClient and Downloader.
class NetworkTracker {
 public:
  void ok();
  void waiting(const std::string& reason, std::chrono::milliseconds delay);
  void auth_required(const std::string& reason);
  NetworkStatus get() const;

 private:
  mutable std::mutex mutex_;
  NetworkStatus status_;
};

// Spreads API calls so at most `per_5min` start in any 5 minutes (token bucket).
class ApiRateLimiter {
 public:
  explicit ApiRateLimiter(int per_5min);
  // Waits for a slot; returns false if `cancelled` became true meanwhile.
  bool acquire(const std::atomic<bool>& cancelled);
  bool try_acquire();

 private:
  std::mutex mutex_;
  double tokens_;
  double capacity_;
  double per_second_;
  std::chrono::steady_clock::time_point last_;
};

class HubClient {  // thread-safe
 public:
  HubClient(std::string endpoint, std::optional<std::string> token, const kaio::FetchConfig& config,
            HubTuning tuning = {});
  ~HubClient();

  // Branch, tag or commit -> commit sha.
  std::string resolve_revision(const std::string& repo, const std::string& revision);
  // Every file of the commit that the globs select, following pagination.
  std::vector<RepoFile> list_files(const std::string& repo, const std::string& sha,
                                   const std::vector<std::string>& include, const std::vector<std::string>& exclude);
  // Streams a file's bytes, resuming with Range after faults and retrying
  // transient ones forever with capped backoff; checks size and hash at the end
  // (throws Error(corrupt) at EOF on mismatch).
  std::unique_ptr<kaio::ByteSource> open_stream(const std::string& repo, const std::string& sha, const RepoFile& file);

  NetworkStatus network_status() const;
  void cancel();  // every blocking call throws Error(cancelled) promptly

  const std::string& endpoint() const { return endpoint_; }
  // The API-call limiter, to share with a Downloader.
  std::shared_ptr<ApiRateLimiter> limiter() const { return limiter_; }

 private:
  std::string get_json(const std::string& url, const std::string& what, std::string* next_link);

  std::string endpoint_;
  std::optional<std::string> token_;
  kaio::FetchConfig config_;
  HubTuning tuning_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
  std::shared_ptr<NetworkTracker> network_;
  std::shared_ptr<ApiRateLimiter> limiter_;
};

}  // namespace kaio::fetch
