#include "fetch/stream_source.h"

#include <cstring>

#include "common/log.h"
#include "common/units.h"
#include "fetch/hash.h"
#include "fetch/http.h"

namespace kaio::fetch {
namespace {

constexpr size_t kBufferCap = 8u << 20;
// CDN refusals in a row (each of a URL resolved again after the last) before
// the stream fails: an expired URL is refused once, a fresh one should not be.
constexpr int kMaxCdnRefusals = 3;

// State of one HTTP attempt, shared with libcurl's callbacks.
struct Attempt {
  StreamSource* source;
  http::Headers headers;
  uint64_t skip = 0;      // bytes of a 200 answer we already delivered
  uint64_t received = 0;  // bytes delivered by this attempt
  uint64_t* delivered;    // total delivered so far
  uint64_t size;
  Digest* digest;
  bool too_long = false;
  std::chrono::steady_clock::time_point last_byte = std::chrono::steady_clock::now();
  std::chrono::milliseconds stall_timeout;
  bool stalled = false;
};

size_t on_body(char* data, size_t size, size_t count, void* userdata) {
  auto* a = static_cast<Attempt*>(userdata);
  size_t n = size * count;
  if (a->headers.status != 200 && a->headers.status != 206) return n;  // an error or redirect body
  size_t offset = 0;
  if (a->headers.status == 200 && a->skip > 0) {  // the server ignored our Range
    offset = static_cast<size_t>(std::min<uint64_t>(a->skip, n));
    a->skip -= offset;
  }
  size_t useful = n - offset;
  if (*a->delivered + useful > a->size) {
    a->too_long = true;
    return 0;
  }
  if (useful > 0) {
    a->digest->update(data + offset, useful);
    if (!a->source->push(data + offset, useful)) return 0;
    *a->delivered += useful;
    a->received += useful;
  }
  a->last_byte = std::chrono::steady_clock::now();  // after push: waiting on the reader is not a stall
  return n;
}

int on_progress(void* userdata, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* a = static_cast<Attempt*>(userdata);
  if (a->source->stopping()) return 1;
  if (std::chrono::steady_clock::now() - a->last_byte > a->stall_timeout) {
    a->stalled = true;
    return 1;
  }
  return 0;
}

}  // namespace

StreamSource::StreamSource(StreamTarget target, const kaio::FetchConfig& config, HubTuning tuning,
                           std::shared_ptr<std::atomic<bool>> cancelled, std::shared_ptr<NetworkTracker> network)
    : target_(std::move(target)),
      config_(config),
      tuning_(tuning),
      cancelled_(std::move(cancelled)),
      network_(std::move(network)) {
  producer_ = std::thread([this] { produce(); });
}

StreamSource::~StreamSource() {
  closing_ = true;
  changed_.notify_all();
  producer_.join();
}

bool StreamSource::push(const char* data, size_t size) {
  std::unique_lock lock(mutex_);
  // Bounded wait in steps so a stop is noticed promptly.
  while (buffered_ >= kBufferCap && !stopping()) changed_.wait_for(lock, std::chrono::milliseconds(100));
  if (stopping()) return false;
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  chunks_.emplace_back(bytes, bytes + size);
  buffered_ += size;
  changed_.notify_all();
  return true;
}

size_t StreamSource::read(std::span<std::byte> out) {
  std::unique_lock lock(mutex_);
  while (chunks_.empty() && !done_) {
    if (*cancelled_) throw Error(ErrorKind::cancelled, target_.name + ": cancelled");
    changed_.wait_for(lock, std::chrono::milliseconds(100));
  }
  if (chunks_.empty()) {
    if (error_) throw *error_;
    return 0;
  }
  size_t copied = 0;
  while (copied < out.size() && !chunks_.empty()) {
    auto& front = chunks_.front();
    size_t n = std::min(out.size() - copied, front.size() - front_offset_);
    std::memcpy(out.data() + copied, front.data() + front_offset_, n);
    copied += n;
    front_offset_ += n;
    if (front_offset_ == front.size()) {
      chunks_.pop_front();
      front_offset_ = 0;
    }
  }
  buffered_ -= copied;
  changed_.notify_all();
  return copied;
}

void StreamSource::finish(std::optional<Error> error) {
  std::lock_guard lock(mutex_);
  done_ = true;
  error_ = std::move(error);
  changed_.notify_all();
}

void StreamSource::produce() {
  const RepoFile& file = target_.file;
  bool lfs = !file.sha256.empty();
  Digest digest(lfs ? HashKind::sha256 : HashKind::sha1);
  if (!lfs) digest.update(git_blob_header(file.size));
  uint64_t delivered = 0;
  std::string etag;  // validator for If-Range once a response served bytes
  http::Backoff backoff(config_.max_backoff);
  // The signed CDN URL the Hub last redirected to: reconnects reuse it (every
  // resolve counts against the Hub's quota) until it may have expired.
  http::SignedUrl cdn;
  int refusals = 0;  // CDN refusals in a row
  const std::string hub_origin = http::origin_of(target_.endpoint);
  try {
    for (;;) {
      std::string url = cdn.usable(std::chrono::steady_clock::now(), tuning_.url_max_age, tuning_.url_expiry_margin)
                            ? cdn.url
                            : target_.url;
      Attempt a{this,
                {},
                0,
                0,
                &delivered,
                file.size,
                &digest,
                false,
                std::chrono::steady_clock::now(),
                config_.stall_timeout,
                false};
      CURLcode rc = CURLE_OK;
      char detail[CURL_ERROR_SIZE] = "";
      for (int redirects = 0; redirects <= 10; ++redirects) {
        http::Easy easy(curl_easy_init());
        // A file over the unranged limit is never asked for whole: "bytes=0-" is a Range too.
        bool ranged = delivered > 0 || file.size > tuning_.unranged_limit;
        std::string range = ranged ? "bytes=" + std::to_string(delivered) + "-" : "";
        http::Slist request =
            http::request_headers(url, target_.endpoint, target_.token, range, delivered > 0 ? etag : "");
        a.headers = {};
        a.skip = delivered;  // only used if the answer is a full 200
        http::apply_common_options(easy.get(), config_.connect_timeout);
        curl_easy_setopt(easy.get(), CURLOPT_URL, url.c_str());
        curl_easy_setopt(easy.get(), CURLOPT_HTTPHEADER, request.get());
        curl_easy_setopt(easy.get(), CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(easy.get(), CURLOPT_WRITEDATA, &a);
        curl_easy_setopt(easy.get(), CURLOPT_HEADERFUNCTION, http::collect_header);
        curl_easy_setopt(easy.get(), CURLOPT_HEADERDATA, &a.headers);
        curl_easy_setopt(easy.get(), CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(easy.get(), CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(easy.get(), CURLOPT_XFERINFODATA, &a);
        curl_easy_setopt(easy.get(), CURLOPT_ERRORBUFFER, detail);
        detail[0] = '\0';
        a.last_byte = std::chrono::steady_clock::now();
        rc = curl_easy_perform(easy.get());
        if (rc != CURLE_OK || !http::is_redirect(a.headers.status)) break;
        url = http::join_location(url, a.headers.get("location"));
        if (http::origin_of(url) != hub_origin)
          cdn = http::signed_url(url, a.headers, std::chrono::steady_clock::now());
      }
      const bool on_cdn = http::origin_of(url) != hub_origin;
      if (stopping()) throw Error(ErrorKind::cancelled, target_.name + ": cancelled");
      if (a.too_long)
        throw Error(ErrorKind::corrupt,
                    target_.name + ": the server sent more than the listed " + std::to_string(file.size) + " bytes");
      if (!a.headers.get("etag").empty() && a.received > 0) etag = a.headers.get("etag");
      if (a.received > 0) {
        backoff.reset();
        refusals = 0;
      }
      bool complete =
          delivered == file.size &&
          ((rc == CURLE_OK && (a.headers.status == 200 || a.headers.status == 206)) || a.headers.status == 416);
      if (complete) {
        std::string got = digest.hex();
        std::string want = lfs ? file.sha256 : file.git_oid;
        if (!want.empty() && got != want)
          throw Error(ErrorKind::corrupt, target_.name + ": hash mismatch (expected " + want + ", got " + got + ")");
        network_->ok();
        finish(std::nullopt);
        return;
      }
      std::string reason;
      std::chrono::milliseconds delay = backoff.next();
      if (rc != CURLE_OK) {
        if (!a.stalled && !http::is_transient_curl(rc))
          throw Error(ErrorKind::rejected, target_.name + ": " + http::curl_reason(rc, detail));
        reason = a.stalled ? "no byte for " + format_duration(config_.stall_timeout) : http::curl_reason(rc, detail);
        if (a.received == 0) cdn.clear();  // nothing came: ask the Hub again (it may send us to another host)
      } else if (a.headers.status == 200 || a.headers.status == 206) {
        reason = "body ended after " + std::to_string(delivered) + " of " + std::to_string(file.size) + " bytes";
      } else if (on_cdn && http::is_cdn_refusal(a.headers.status)) {
        // The signed URL expired (or was revoked): that says nothing about the
        // Hub token. Resolve again through the Hub, at once the first time.
        cdn.clear();
        reason =
            "the CDN host refused the signed URL (HTTP " + std::to_string(a.headers.status) + "); resolving it again";
        if (++refusals > kMaxCdnRefusals)
          throw Error(ErrorKind::rejected,
                      "download " + target_.name + ": the CDN host refused " + std::to_string(kMaxCdnRefusals) +
                          " freshly signed URLs in a row (HTTP " + std::to_string(a.headers.status) + ")");
        if (refusals == 1) delay = std::chrono::milliseconds(0);
      } else if (http::is_transient_status(a.headers.status)) {
        reason = "HTTP " + std::to_string(a.headers.status);
        delay = http::server_delay(a.headers).value_or(delay);
        cdn.clear();
      } else {
        Error error = http::status_error(a.headers, "download " + target_.name);
        if (error.kind() == ErrorKind::auth) network_->auth_required(error.what());
        throw error;
      }
      if (a.received > 0) delay = std::min(delay, std::chrono::milliseconds(1000));  // it was moving: resume soon
      if (delay > std::chrono::milliseconds(0)) network_->waiting(target_.name + ": " + reason, delay);
      spdlog::warn("stream {}: {} at byte {}; resuming in {}", target_.name, reason, delivered, format_duration(delay));
      auto until = std::chrono::steady_clock::now() + delay;
      while (std::chrono::steady_clock::now() < until && !stopping())
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (stopping()) throw Error(ErrorKind::cancelled, target_.name + ": cancelled");
    }
  } catch (const Error& e) {
    finish(e);
  }
}

}  // namespace kaio::fetch
