#pragma once
// Downloads Hub files to disk on one libcurl-multi thread: several files at
// once, large files in parallel Range parts, resume from `<dest>.part`,
// transient faults retried forever with capped backoff, size and hash checked,
// a file's signed CDN URL reused while fresh and resolved again through the Hub
// before a request when it may have expired (a CDN refusal is never an auth
// failure), files over HubTuning::unranged_limit only requested with Range,
// fsync then rename to `dest` before the job is reported done.
// The caller reserves disk space before submitting.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/error.h"
#include "fetch/hub.h"

namespace kaio::fetch {

struct DownloadJob {
  std::string repo;
  std::string sha;
  RepoFile file;
  std::filesystem::path dest;
};

struct DownloadResult {
  DownloadJob job;
  bool ok = false;
  kaio::ErrorKind kind = kaio::ErrorKind::internal;  // meaningful when !ok
  std::string message;                               // names the file; never the token
};

struct FileProgress {
  std::string path;
  uint64_t done = 0;
  uint64_t total = 0;
};

struct Progress {
  std::vector<FileProgress> files;  // active and queued jobs
  uint64_t done = 0;                // bytes, over every job submitted
  uint64_t total = 0;
  double bytes_per_second = 0;  // moving average
  std::optional<std::chrono::seconds> eta;
  size_t finished = 0, failed = 0, pending = 0;
};

class Downloader {
 public:
  // `limiter` is shared with a HubClient so API and resolve calls respect one quota.
  Downloader(std::string endpoint, std::optional<std::string> token, const kaio::FetchConfig& config,
             std::shared_ptr<ApiRateLimiter> limiter = nullptr, HubTuning tuning = {});
  ~Downloader();  // stop()
  Downloader(const Downloader&) = delete;
  Downloader& operator=(const Downloader&) = delete;

  // on_done runs on the download thread; keep it short.
  void submit(DownloadJob job, std::function<void(const DownloadResult&)> on_done);
  void pause();  // in-flight transfers stop; .part files are kept
  void resume();
  void cancel(const std::filesystem::path& dest);  // drops the job and its .part; reports cancelled
  void stop();  // ends the thread; unfinished jobs report cancelled and keep their .part
  // A config reload: files at once and the bandwidth cap apply to transfers
  // started from now on; running ones finish under the old cap.
  void set_limits(int parallel_files, uint64_t bandwidth_limit);

  Progress progress() const;
  NetworkStatus network_status() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kaio::fetch
