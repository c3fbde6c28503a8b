#include "fetch/downloader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "common/fd.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/units.h"
#include "fetch/hash.h"
#include "fetch/http.h"

namespace kaio::fetch {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr int kMaxRedirects = 10;
constexpr int kMaxCorruptRetries = 3;
// CDN refusals in a row (each of a URL resolved again after the last) before
// the file fails: an expired URL is refused once, a fresh one should not be.
constexpr int kMaxCdnRefusals = 3;

using kaio::Fd;

fs::path part_path(const fs::path& dest) {
  return fs::path(dest.string() + ".part");
}
fs::path ranges_path(const fs::path& dest) {
  return fs::path(dest.string() + ".part.ranges");
}

struct Task;

// One byte range of a file, downloaded by at most one transfer at a time.
struct Part {
  uint64_t start = 0, pos = 0, end = 0;  // [start, end); pos = next byte to write
  bool active = false;
  Clock::time_point retry_at{};
  http::Backoff backoff{60s};
  int cdn_refusals = 0;  // in a row, without a byte between
  bool done() const { return pos >= end; }
};

// One HTTP request for one part (redirects make new transfers).
struct Transfer {
  Task* task;
  Part* part;
  http::Easy easy;
  http::Slist request;
  http::Headers headers;
  std::string url;
  int redirects = 0;
  bool resolving = false;      // at the Hub's resolve URL and no answer yet
  bool ranged = false;         // the Range matters (not the whole file from byte 0)
  bool checked = false;        // first body byte seen and the answer validated
  bool restart_whole = false;  // a 200 answered a Range on a split file
  bool too_long = false;
  int io_errno = 0;  // set when writing the .part failed
  char error_detail[CURL_ERROR_SIZE] = "";
  uint64_t received = 0;
  Clock::time_point last_byte = Clock::now();
};

struct Task {
  DownloadJob job;
  std::function<void(const DownloadResult&)> on_done;
  std::string name;  // repo/path for messages
  Fd fd;
  std::vector<std::unique_ptr<Part>> parts;
  bool started = false;
  bool split = false;
  std::string etag;
  http::SignedUrl cdn;           // last cross-origin redirect target, reused by parts while fresh
  std::optional<Digest> digest;  // hash of the .part's bytes [0, hashed)
  uint64_t hashed = 0;
  std::future<uint64_t> hashing;  // extends `hashed` on another thread, from the page cache
  int corrupt_retries = 0;
  http::Backoff restart_backoff{60s};  // a server that keeps sending too much is not asked again at once
  bool verify_started = false;
  uint64_t done_bytes() const {
    uint64_t d = 0;
    for (const auto& p : parts) d += p->pos - p->start;
    return d;
  }
};

}  // namespace

struct Downloader::Impl {
  std::string endpoint;
  std::optional<std::string> token;
  FetchConfig config;
  HubTuning tuning;
  std::shared_ptr<ApiRateLimiter> limiter;
  NetworkTracker network;
  http::Multi multi{curl_multi_init()};

  // Commands from other threads.
  mutable std::mutex mutex;
  std::deque<std::unique_ptr<Task>> incoming;
  std::vector<fs::path> cancels;
  std::optional<std::pair<int, uint64_t>> new_limits;
  bool paused = false, stopping = false;
  Progress snapshot;

  // Owned by the download thread.
  std::list<std::unique_ptr<Task>> tasks;
  std::list<std::unique_ptr<Transfer>> transfers;
  uint64_t finished_bytes = 0, submitted_bytes = 0;
  size_t finished = 0, failed = 0;
  double rate = 0;
  uint64_t rate_bytes = 0;
  Clock::time_point rate_at = Clock::now(), ranges_saved_at = Clock::now();
  std::atomic<uint64_t> received_total{0};
  std::thread thread;
  std::mutex join_mutex;  // stop() may come from two threads at once (the engine's stop, a waiting producer)

  void run();
  void take_commands(bool& paused_now, bool& stop_now);
  bool start_task(Task& t);
  void plan_parts(Task& t, uint64_t existing);
  void start_transfers(bool paused_now);
  void start_transfer(Task& t, Part& p, const std::string& url, int redirects);
  void on_transfer_done(Transfer* x, CURLcode rc);
  void retry_part(Task& t, Part& p, std::chrono::milliseconds delay, const std::string& reason, bool moved);
  void check_stalls();
  void abort_transfers(Task* only);
  void finish_task(Task& t, bool ok, ErrorKind kind, const std::string& message);
  void maybe_complete(Task& t);
  void restart_from_zero(Task& t, const std::string& reason);
  void save_ranges(Task& t);
  void advance_hash(Task& t);
  void wait_hashing(Task& t);
  void update_progress();
  void remove_finished_tasks();
  static size_t on_body(char* data, size_t size, size_t count, void* userdata);
};

Downloader::Downloader(std::string endpoint, std::optional<std::string> token, const FetchConfig& config,
                       std::shared_ptr<ApiRateLimiter> limiter, HubTuning tuning)
    : impl_(std::make_unique<Impl>()) {
  http::global_init();
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  impl_->endpoint = std::move(endpoint);
  impl_->token = std::move(token);
  if (impl_->token) kaio::add_secret(*impl_->token);
  impl_->config = config;
  impl_->tuning = tuning;
  impl_->limiter = limiter ? std::move(limiter) : std::make_shared<ApiRateLimiter>(config.api_requests_per_5min);
  curl_multi_setopt(impl_->multi.get(), CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
  impl_->thread = std::thread([this] { impl_->run(); });
}

Downloader::~Downloader() {
  stop();
}

void Downloader::submit(DownloadJob job, std::function<void(const DownloadResult&)> on_done) {
  auto t = std::make_unique<Task>();
  t->name = job.repo + "/" + job.file.path;
  t->job = std::move(job);
  t->on_done = std::move(on_done);
  t->restart_backoff = http::Backoff(impl_->config.max_backoff);
  std::lock_guard lock(impl_->mutex);
  if (impl_->stopping) throw Error(ErrorKind::cancelled, "download " + t->name + ": the downloader is stopped");
  impl_->incoming.push_back(std::move(t));
  curl_multi_wakeup(impl_->multi.get());
}

void Downloader::pause() {
  std::lock_guard lock(impl_->mutex);
  impl_->paused = true;
  curl_multi_wakeup(impl_->multi.get());
}

void Downloader::set_limits(int parallel_files, uint64_t bandwidth_limit) {
  std::lock_guard lock(impl_->mutex);
  impl_->new_limits = std::make_pair(parallel_files, bandwidth_limit);
  curl_multi_wakeup(impl_->multi.get());
}

void Downloader::resume() {
  std::lock_guard lock(impl_->mutex);
  impl_->paused = false;
  curl_multi_wakeup(impl_->multi.get());
}

void Downloader::cancel(const fs::path& dest) {
  std::lock_guard lock(impl_->mutex);
  impl_->cancels.push_back(dest);
  curl_multi_wakeup(impl_->multi.get());
}

void Downloader::stop() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
    curl_multi_wakeup(impl_->multi.get());
  }
  // Two threads joining one thread is undefined; seen as a hang in Engine::stop
  // while the producer, waiting on a download, stopped the downloader too.
  std::lock_guard join(impl_->join_mutex);
  if (impl_->thread.joinable()) impl_->thread.join();
}

Progress Downloader::progress() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->snapshot;
}

NetworkStatus Downloader::network_status() const {
  return impl_->network.get();
}

void Downloader::Impl::take_commands(bool& paused_now, bool& stop_now) {
  std::deque<std::unique_ptr<Task>> fresh;
  std::vector<fs::path> cancel_now;
  {
    std::lock_guard lock(mutex);
    fresh.swap(incoming);
    cancel_now.swap(cancels);
    if (new_limits) {
      config.parallel_files = new_limits->first;
      config.bandwidth_limit = new_limits->second;
      new_limits.reset();
    }
    paused_now = paused;
    stop_now = stopping;
  }
  for (auto& t : fresh) {
    submitted_bytes += t->job.file.size;
    tasks.push_back(std::move(t));
  }
  for (const auto& dest : cancel_now) {
    for (auto& t : tasks) {
      if (t->job.dest != dest || !t->on_done) continue;
      abort_transfers(t.get());
      t->fd = Fd();
      std::error_code ec;
      fs::remove(part_path(dest), ec);
      fs::remove(ranges_path(dest), ec);
      finish_task(*t, false, ErrorKind::cancelled, "download " + t->name + ": cancelled");
    }
  }
  if (paused_now) abort_transfers(nullptr);
}

void Downloader::Impl::run() {
  bool paused_now = false, stop_now = false;
  while (true) {
    take_commands(paused_now, stop_now);
    if (stop_now) break;
    start_transfers(paused_now);
    int running = 0;
    curl_multi_perform(multi.get(), &running);
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi.get(), &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Transfer* x = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&x));
      on_transfer_done(x, msg->data.result);
    }
    check_stalls();
    for (auto& t : tasks) {
      if (t->on_done) advance_hash(*t);
      if (t->on_done) maybe_complete(*t);
    }
    remove_finished_tasks();
    update_progress();
    curl_multi_poll(multi.get(), nullptr, 0, 100, nullptr);
  }
  abort_transfers(nullptr);
  for (auto& t : tasks) {
    if (t->hashing.valid()) t->hashing.wait();
    if (t->split && t->fd.get() >= 0) save_ranges(*t);
    if (t->on_done) finish_task(*t, false, ErrorKind::cancelled, "download " + t->name + ": the downloader stopped");
  }
  tasks.clear();
}

void Downloader::Impl::plan_parts(Task& t, uint64_t existing) {
  const uint64_t size = t.job.file.size;
  t.parts.clear();
  t.digest.emplace(t.job.file.sha256.empty() ? HashKind::sha1 : HashKind::sha256);
  if (t.job.file.sha256.empty()) t.digest->update(git_blob_header(size));
  t.hashed = 0;
  t.split = config.split > 1 && size >= config.split_min_size && size >= static_cast<uint64_t>(config.split);
  auto add = [&](uint64_t start, uint64_t pos, uint64_t end) {
    auto p = std::make_unique<Part>();
    p->start = start;
    p->pos = pos;
    p->end = end;
    p->backoff = http::Backoff(config.max_backoff);
    t.parts.push_back(std::move(p));
  };
  if (!t.split) {
    add(0, existing, size);
    return;
  }
  // Split: the sidecar lists each part's progress; without one, an existing .part
  // came from a one-connection download and its bytes are a done prefix.
  std::ifstream in(ranges_path(t.job.dest));
  auto saved = nlohmann::json::parse(in, nullptr, false);
  if (in && !saved.is_discarded() && saved.value("size", uint64_t{0}) == size && saved.contains("parts")) {
    for (const auto& r : saved["parts"]) add(r[0], r[1], r[2]);
    t.etag = saved.value("etag", "");
    return;
  }
  if (existing > 0) add(0, existing, existing);
  uint64_t rest = size - existing, n = static_cast<uint64_t>(config.split);
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t b = existing + rest * i / n, e = existing + rest * (i + 1) / n;
    if (e > b) add(b, b, e);
  }
  save_ranges(t);
}

void Downloader::Impl::save_ranges(Task& t) {
  // Data first, then the record of it: a crash can only make the record stale-low.
  ::fdatasync(t.fd.get());
  nlohmann::json parts = nlohmann::json::array();
  for (const auto& p : t.parts) parts.push_back({p->start, p->pos, p->end});
  nlohmann::json j = {{"size", t.job.file.size}, {"etag", t.etag}, {"parts", parts}};
  try {
    write_file_durably(ranges_path(t.job.dest), j.dump());
  } catch (const Error& e) {
    spdlog::warn("download {}: cannot save part progress: {}", t.name, e.what());
  }
}

bool Downloader::Impl::start_task(Task& t) {
  const fs::path part = part_path(t.job.dest);
  std::error_code ec;
  fs::create_directories(t.job.dest.parent_path(), ec);
  t.fd = Fd(::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (t.fd.get() < 0) {
    finish_task(t, false, ErrorKind::io,
                "download " + t.name + ": cannot open " + part.string() + ": " + std::strerror(errno));
    return false;
  }
  struct stat st {};
  ::fstat(t.fd.get(), &st);
  uint64_t existing = static_cast<uint64_t>(st.st_size);
  if (existing > t.job.file.size) {
    spdlog::warn("download {}: {} is larger than the file ({} > {}); starting over", t.name, part.string(), existing,
                 t.job.file.size);
    if (::ftruncate(t.fd.get(), 0) != 0) spdlog::warn("download {}: truncate failed", t.name);
    fs::remove(ranges_path(t.job.dest), ec);
    existing = 0;
  }
  plan_parts(t, existing);
  if (existing > 0)
    spdlog::info("download {}: resuming from {} of {}", t.name, format_size(t.done_bytes()),
                 format_size(t.job.file.size));
  t.started = true;
  return true;
}

void Downloader::Impl::start_transfers(bool paused_now) {
  if (paused_now) return;
  int active_files = 0;
  for (auto& t : tasks)
    if (t->on_done && t->started && !t->verify_started) ++active_files;
  auto now = Clock::now();
  for (auto& tp : tasks) {
    Task& t = *tp;
    if (!t.on_done || t.verify_started) continue;
    if (!t.started) {
      if (active_files >= std::max(1, config.parallel_files)) continue;
      if (!start_task(t)) continue;
      ++active_files;
    }
    for (auto& p : t.parts) {
      if (p->done() || p->active || now < p->retry_at) continue;
      // A signed URL that may have expired (after a pause, a queued part, a
      // retry) is not tried: the Hub signs a fresh one.
      bool fresh = t.cdn.usable(now, tuning.url_max_age, tuning.url_expiry_margin);
      if (!fresh &&
          std::any_of(transfers.begin(), transfers.end(), [&](auto& x) { return x->task == &t && x->resolving; }))
        continue;  // another part is resolving the file now: its redirect serves this one too (one resolve, not one per
                   // part)
      std::string url = fresh ? t.cdn.url : http::resolve_url(endpoint, t.job.repo, t.job.sha, t.job.file.path);
      if (http::origin_of(url) == http::origin_of(endpoint) && !limiter->try_acquire()) {
        p->retry_at = now + 200ms;  // over the API quota: wait for a slot
        continue;
      }
      start_transfer(t, *p, url, 0);
    }
  }
}

void Downloader::Impl::start_transfer(Task& t, Part& p, const std::string& url, int redirects) {
  auto x = std::make_unique<Transfer>();
  x->task = &t;
  x->part = &p;
  x->url = url;
  x->redirects = redirects;
  x->resolving = http::origin_of(url) == http::origin_of(endpoint);
  x->easy.reset(curl_easy_init());
  x->ranged = p.pos > 0 || p.end < t.job.file.size;
  // A file over the unranged limit is never asked for whole: bytes=0-(size-1) is a Range too.
  bool range_header = x->ranged || t.job.file.size > tuning.unranged_limit;
  std::string range = range_header ? "bytes=" + std::to_string(p.pos) + "-" + std::to_string(p.end - 1) : "";
  x->request = http::request_headers(url, endpoint, token, range, x->ranged ? t.etag : "");
  CURL* h = x->easy.get();
  http::apply_common_options(h, config.connect_timeout);
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->request.get());
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, x.get());
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, http::collect_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &x->headers);
  curl_easy_setopt(h, CURLOPT_PRIVATE, x.get());
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->error_detail);
  curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);
  if (config.bandwidth_limit > 0) {
    // An even share of the cap per transfer running now.
    curl_off_t share = static_cast<curl_off_t>(config.bandwidth_limit / (transfers.size() + 1));
    curl_easy_setopt(h, CURLOPT_MAX_RECV_SPEED_LARGE, std::max<curl_off_t>(share, 1024));
  }
  p.active = true;
  curl_multi_add_handle(multi.get(), h);
  transfers.push_back(std::move(x));
}

size_t Downloader::Impl::on_body(char* data, size_t size, size_t count, void* userdata) {
  auto* x = static_cast<Transfer*>(userdata);
  size_t n = size * count;
  long status = x->headers.status;
  if (status != 200 && status != 206) return n;  // redirect or error body: not file bytes
  Task& t = *x->task;
  Part& p = *x->part;
  if (!x->checked) {
    x->checked = true;
    x->resolving = false;
    if (status == 200 && x->ranged) {
      // The server ignored our Range (or If-Range failed): the file starts over.
      x->restart_whole = true;
      return 0;
    }
  }
  if (p.pos + n > p.end) {
    x->too_long = true;
    return 0;
  }
  const char* at = data;
  size_t left = n;
  while (left > 0) {
    ssize_t w = ::pwrite(t.fd.get(), at, left, static_cast<off_t>(p.pos + (n - left)));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      x->io_errno = w < 0 ? errno : ENOSPC;  // a zero-byte write means the device is full
      return 0;
    }
    at += w;
    left -= static_cast<size_t>(w);
  }
  p.pos += n;
  p.cdn_refusals = 0;
  x->received += n;
  x->last_byte = Clock::now();
  return n;
}

void Downloader::Impl::on_transfer_done(Transfer* x, CURLcode rc) {
  Task& t = *x->task;
  Part& p = *x->part;
  auto owned = std::find_if(transfers.begin(), transfers.end(), [&](auto& u) { return u.get() == x; });
  std::unique_ptr<Transfer> keep = std::move(*owned);
  transfers.erase(owned);
  curl_multi_remove_handle(multi.get(), x->easy.get());
  p.active = false;
  const long status = x->headers.status;
  if (!x->headers.get("etag").empty() && x->received > 0) t.etag = x->headers.get("etag");
  if (x->io_errno) {
    bool full = x->io_errno == ENOSPC || x->io_errno == EDQUOT;
    return finish_task(t, false, full ? ErrorKind::disk_full : ErrorKind::io,
                       "download " + t.name + ": writing " + part_path(t.job.dest).string() +
                           " failed: " + std::strerror(x->io_errno));
  }
  if (x->too_long) return restart_from_zero(t, "the server sent more bytes than the listed size");
  if (x->restart_whole) return restart_from_zero(t, "the server answered a Range request with the whole file");
  if (rc == CURLE_OK && http::is_redirect(status) && !x->headers.get("location").empty()) {
    if (x->redirects >= kMaxRedirects)
      return finish_task(t, false, ErrorKind::rejected, "download " + t.name + ": too many redirects");
    std::string next = http::join_location(x->url, x->headers.get("location"));
    if (http::origin_of(next) != http::origin_of(endpoint)) t.cdn = http::signed_url(next, x->headers, Clock::now());
    return start_transfer(t, p, next, x->redirects + 1);
  }
  if (rc == CURLE_OK && (status == 200 || status == 206) && p.done()) {
    network.ok();
    p.backoff.reset();
    return;
  }
  if (status == 416 && rc == CURLE_OK) {
    std::string cr = x->headers.get("content-range");
    if (p.done() || cr == "bytes */" + std::to_string(t.job.file.size)) {
      if (p.done()) return;
      return restart_from_zero(t, "416 for a range inside the file");
    }
    return restart_from_zero(t, "the server's size differs (" + cr + ")");
  }
  bool moved = x->received > 0;
  const bool on_cdn = http::origin_of(x->url) != http::origin_of(endpoint);
  if (rc != CURLE_OK) {
    if (!http::is_transient_curl(rc))
      return finish_task(t, false, ErrorKind::rejected,
                         "download " + t.name + ": " + http::curl_reason(rc, x->error_detail));
    // Nothing came: ask the Hub again (it may send us to another host). A body
    // cut short keeps a URL that is still fresh (every resolve costs quota).
    if (!moved) t.cdn.clear();
    return retry_part(t, p, p.backoff.next(), http::curl_reason(rc, x->error_detail), moved);
  }
  if (status == 200 || status == 206) return retry_part(t, p, p.backoff.next(), "body ended early", moved);
  if (on_cdn && http::is_cdn_refusal(status)) {
    // The signed URL expired (or was revoked): that says nothing about the Hub
    // token. Resolve again through the Hub, at once the first time.
    if (t.cdn.url == x->url) t.cdn.clear();
    std::string why = "HTTP " + std::to_string(status) + " from the CDN host for a signed URL";
    if (++p.cdn_refusals > kMaxCdnRefusals)
      return finish_task(t, false, ErrorKind::rejected,
                         "download " + t.name + ": the CDN host refused " + std::to_string(kMaxCdnRefusals) +
                             " freshly signed URLs in a row (" + why + ")");
    if (p.cdn_refusals == 1) {
      p.retry_at = Clock::now();
      spdlog::info("download {}: {} (expired?); resolving it again at byte {}", t.name, why, p.pos);
      return;
    }
    return retry_part(t, p, p.backoff.next(), why, false);
  }
  if (http::is_transient_status(status)) {
    t.cdn.clear();
    return retry_part(t, p, http::server_delay(x->headers).value_or(p.backoff.next()), "HTTP " + std::to_string(status),
                      moved);
  }
  Error error = http::status_error(x->headers, "download " + t.name);
  if (error.kind() == ErrorKind::auth) network.auth_required(error.what());
  if (status == 404 || status == 410) {
    std::error_code ec;
    t.fd = Fd();
    fs::remove(part_path(t.job.dest), ec);
    fs::remove(ranges_path(t.job.dest), ec);
  }
  finish_task(t, false, error.kind(), error.what());
}

void Downloader::Impl::retry_part(Task& t, Part& p, std::chrono::milliseconds delay, const std::string& reason,
                                  bool moved) {
  if (moved) {
    p.backoff.reset();
    delay = std::min(delay, std::chrono::milliseconds(500));  // it was moving: resume soon
  }
  p.retry_at = Clock::now() + delay;
  network.waiting("download " + t.name + ": " + reason, delay);
  spdlog::warn("download {}: {} at byte {} of {}; resuming in {}", t.name, reason, p.pos, t.job.file.size,
               format_duration(delay));
}

void Downloader::Impl::check_stalls() {
  auto now = Clock::now();
  std::vector<Transfer*> stalled;
  for (auto& x : transfers)
    if (now - x->last_byte > config.stall_timeout) stalled.push_back(x.get());
  for (Transfer* x : stalled) {
    Task& t = *x->task;
    Part& p = *x->part;
    bool moved = x->received > 0;
    curl_multi_remove_handle(multi.get(), x->easy.get());
    p.active = false;
    transfers.remove_if([&](auto& u) { return u.get() == x; });
    if (!moved) t.cdn.clear();
    retry_part(t, p, moved ? 0ms : p.backoff.next(), "no byte for " + format_duration(config.stall_timeout), false);
  }
}

void Downloader::Impl::abort_transfers(Task* only) {
  for (auto it = transfers.begin(); it != transfers.end();) {
    if (only && (*it)->task != only) {
      ++it;
      continue;
    }
    curl_multi_remove_handle(multi.get(), (*it)->easy.get());
    (*it)->part->active = false;
    it = transfers.erase(it);
  }
  for (auto& t : tasks)
    if ((!only || t.get() == only) && t->split && t->fd.get() >= 0 && !t->verify_started) save_ranges(*t);
}

void Downloader::Impl::restart_from_zero(Task& t, const std::string& reason) {
  spdlog::warn("download {}: {}; starting the file over", t.name, reason);
  abort_transfers(&t);
  std::error_code ec;
  fs::remove(ranges_path(t.job.dest), ec);
  if (::ftruncate(t.fd.get(), 0) != 0)
    return finish_task(t, false, ErrorKind::io, "download " + t.name + ": truncate failed");
  wait_hashing(t);
  t.etag.clear();
  t.cdn.clear();
  t.verify_started = false;
  plan_parts(t, 0);
  auto delay = t.restart_backoff.next();
  for (auto& p : t.parts) p->retry_at = Clock::now() + delay;
}

// End of the bytes [0, n) that are all written: parts are in start order.
uint64_t contiguous_prefix(const Task& t) {
  uint64_t prefix = 0;
  for (const auto& p : t.parts) {
    if (p->start != prefix) break;
    prefix = p->pos;
    if (!p->done()) break;
  }
  return prefix;
}

// Hashes what has arrived in order, behind the transfers, so the check at the
// end has little left to read; also starts writeback of those bytes early.
void Downloader::Impl::advance_hash(Task& t) {
  if (!t.started || t.fd.get() < 0) return;
  if (t.hashing.valid()) {
    if (t.hashing.wait_for(0s) != std::future_status::ready) return;
    try {
      t.hashed = t.hashing.get();
    } catch (const std::exception& e) {
      return finish_task(t, false, ErrorKind::io,
                         "download " + t.name + ": reading back " + part_path(t.job.dest).string() + ": " + e.what());
    }
  }
  uint64_t to = contiguous_prefix(t);
  if (to <= t.hashed) return;
  t.hashing = std::async(std::launch::async, [fd = t.fd.get(), digest = &*t.digest, from = t.hashed, to] {
    std::vector<char> buf(1 << 20);
    for (uint64_t at = from; at < to;) {
      ssize_t n =
          ::pread(fd, buf.data(), static_cast<size_t>(std::min<uint64_t>(buf.size(), to - at)), static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error(n == 0 ? "unexpected end of file" : std::strerror(errno));
      digest->update(buf.data(), static_cast<size_t>(n));
      at += static_cast<uint64_t>(n);
    }
    ::sync_file_range(fd, static_cast<off_t>(from), static_cast<off_t>(to - from), SYNC_FILE_RANGE_WRITE);
    return to;
  });
}

void Downloader::Impl::wait_hashing(Task& t) {
  if (!t.hashing.valid()) return;
  t.hashing.wait();
  try {
    t.hashed = t.hashing.get();
  } catch (const std::exception&) {
    t.hashed = 0;  // the caller starts over or gives up
  }
}

void Downloader::Impl::maybe_complete(Task& t) {
  if (!t.started || t.fd.get() < 0) return;
  if (!std::all_of(t.parts.begin(), t.parts.end(), [](auto& p) { return p->done(); })) return;
  const RepoFile& f = t.job.file;
  const bool lfs = !f.sha256.empty();
  const fs::path part = part_path(t.job.dest);
  if (!t.verify_started) {
    t.verify_started = true;
    if (::fsync(t.fd.get()) != 0)
      return finish_task(t, false, ErrorKind::io, "download " + t.name + ": fsync of " + part.string() + " failed");
  }
  if (t.hashed < f.size || t.hashing.valid()) return;  // advance_hash is still reading
  std::string got = t.digest->hex();
  const std::string want = lfs ? f.sha256 : f.git_oid;
  struct stat st {};
  ::fstat(t.fd.get(), &st);
  if (static_cast<uint64_t>(st.st_size) != f.size || (!want.empty() && got != want)) {
    std::string why = static_cast<uint64_t>(st.st_size) != f.size
                          ? "size " + std::to_string(st.st_size) + " != " + std::to_string(f.size)
                          : "hash mismatch (expected " + want + ", got " + got + ")";
    if (++t.corrupt_retries > kMaxCorruptRetries)
      return finish_task(
          t, false, ErrorKind::corrupt,
          "download " + t.name + ": " + why + " after " + std::to_string(kMaxCorruptRetries) + " retries");
    return restart_from_zero(t, why);
  }
  t.fd = Fd();
  std::error_code ec;
  fs::remove(ranges_path(t.job.dest), ec);
  try {
    rename_durably(part, t.job.dest);
  } catch (const Error& e) {
    return finish_task(t, false, ErrorKind::io, "download " + t.name + ": " + e.what());
  }
  spdlog::info("download {}: done, {} verified ({})", t.name, format_size(f.size), lfs ? "sha256" : "git sha1");
  finish_task(t, true, ErrorKind::internal, "");
}

void Downloader::Impl::finish_task(Task& t, bool ok, ErrorKind kind, const std::string& message) {
  if (!t.on_done) return;
  wait_hashing(t);
  abort_transfers(&t);
  t.fd = Fd();
  if (ok) {
    ++finished;
  } else {
    ++failed;
    spdlog::error("{}", kaio::redact(message));
  }
  finished_bytes += ok ? t.job.file.size : 0;
  DownloadResult result{t.job, ok, kind, kaio::redact(message)};
  auto callback = std::move(t.on_done);
  t.on_done = nullptr;
  callback(result);
}

void Downloader::Impl::remove_finished_tasks() {
  tasks.remove_if([](auto& t) { return !t->on_done; });
}

void Downloader::Impl::update_progress() {
  Progress p;
  uint64_t in_flight = 0;
  for (auto& t : tasks) {
    if (!t->on_done) continue;
    uint64_t d = t->started ? t->done_bytes() : 0;
    in_flight += d;
    p.files.push_back({t->job.file.path, d, t->job.file.size});
  }
  p.done = finished_bytes + in_flight;
  p.total = submitted_bytes;
  auto now = Clock::now();
  double dt = std::chrono::duration<double>(now - rate_at).count();
  if (dt >= 0.5) {
    uint64_t moved = p.done >= rate_bytes ? p.done - rate_bytes : 0;
    rate = rate == 0 ? moved / dt : 0.7 * rate + 0.3 * (moved / dt);
    rate_bytes = p.done;
    rate_at = now;
  }
  p.bytes_per_second = rate;
  if (rate > 1 && p.total > p.done) p.eta = std::chrono::seconds(static_cast<int64_t>((p.total - p.done) / rate));
  p.finished = finished;
  p.failed = failed;
  p.pending = p.files.size();
  if (now - ranges_saved_at > 5s) {
    ranges_saved_at = now;
    for (auto& t : tasks)
      if (t->on_done && t->split && t->fd.get() >= 0 && !t->verify_started) save_ranges(*t);
  }
  std::lock_guard lock(mutex);
  snapshot = std::move(p);
}

}  // namespace kaio::fetch
