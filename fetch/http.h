#pragma once
// Internal HTTP helpers shared by HubClient and Downloader: libcurl handle
// ownership, Hub URL building, response header capture, error mapping and
// retry backoff. Not part of the public API.
#include <curl/curl.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace kaio::fetch::http {

struct EasyDelete {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
struct SlistDelete {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
struct MultiDelete {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
struct ShareDelete {
  void operator()(CURLSH* s) const { curl_share_cleanup(s); }
};
using Easy = std::unique_ptr<CURL, EasyDelete>;
using Slist = std::unique_ptr<curl_slist, SlistDelete>;
using Multi = std::unique_ptr<CURLM, MultiDelete>;
using Share = std::unique_ptr<CURLSH, ShareDelete>;

void global_init();  // once per process, thread-safe

// UTF-8 path percent-encoded with '/' kept; a revision fully encoded.
std::string encode_path(std::string_view path);
std::string encode_component(std::string_view text);

std::string resolve_url(const std::string& endpoint, const std::string& repo, const std::string& revision,
                        const std::string& path);
std::string api_url(const std::string& endpoint, const std::string& repo, const std::string& what,
                    const std::string& revision);

// scheme://host[:port] of an absolute URL, lowercased; "" when not absolute.
std::string origin_of(std::string_view url);
// Location against the URL it came from (absolute, or relative to the origin).
std::string join_location(const std::string& base, const std::string& location);

// Response headers, names lowercased; the last response's only (redirects reset it).
struct Headers {
  long status = 0;
  std::map<std::string, std::string> values;
  std::string get(const std::string& name) const;
};
// CURLOPT_HEADERFUNCTION callback writing into a Headers passed as userdata.
size_t collect_header(char* data, size_t size, size_t count, void* userdata);

// Common options: timeouts, TLS verification, no built-in redirects, HTTP/2 when offered.
void apply_common_options(CURL* h, std::chrono::milliseconds connect_timeout);
// The request headers; Authorization only when the URL is on the endpoint's origin.
Slist request_headers(const std::string& url, const std::string& endpoint, const std::optional<std::string>& token,
                      const std::string& range = "", const std::string& if_range = "");

// A signed CDN URL (a cross-origin redirect target of /resolve), reused for a
// file's parts and reconnects while it is fresh. The Hub's signed URLs expire
// (an hour on huggingface.co) and an expired one gets 403 from the CDN host.
struct SignedUrl {
  std::string url;  // empty: none; requests go through the Hub's resolve URL
  std::chrono::steady_clock::time_point resolved_at{};
  std::optional<std::chrono::steady_clock::time_point> expires;  // what the URL says, on our steady clock
  // Fresh: younger than max_age and, when it says when it expires, more than
  // `margin` before that.
  bool usable(std::chrono::steady_clock::time_point now, std::chrono::milliseconds max_age,
              std::chrono::milliseconds margin) const;
  void clear() { *this = SignedUrl{}; }
};
// The redirect target `url` as resolved now; its expiry comes from the URL
// (Expires=, or X-Amz-Date plus X-Amz-Expires) measured against the redirect's
// Date header when there is one (the signer's clock), else our own clock.
SignedUrl signed_url(std::string url, const Headers& redirect, std::chrono::steady_clock::time_point now);
// When a signed URL says it stops working (Unix time), if it says so.
std::optional<std::chrono::system_clock::time_point> url_expiry(std::string_view url);
// An answer of a CDN host that means "this signed URL no longer works"
// (403 AccessDenied "Request has expired", or 400/401/410): resolve again. It
// says nothing about the Hub token; only the Hub's own 401/403 does.
bool is_cdn_refusal(long status);

bool is_redirect(long status);
bool is_transient_status(long status);
bool is_transient_curl(CURLcode code);
// libcurl's own words from CURLOPT_ERRORBUFFER ("Too large response headers:
// 307232 > 307200") when it wrote any, else the code's generic text.
std::string curl_reason(CURLcode code, const char* detail);
// A failed HTTP answer as an Error naming the request; gated repos hint at HF_TOKEN.
Error status_error(const Headers& headers, const std::string& what);

// Seconds the server asked us to wait (Retry-After or RateLimit t=N when r=0).
std::optional<std::chrono::milliseconds> server_delay(const Headers& headers);

// Sleeps, checking `cancelled` often; throws Error(cancelled) naming `what`.
void sleep_unless_cancelled(std::chrono::milliseconds delay, const std::atomic<bool>& cancelled,
                            const std::string& what);

// Exponential backoff with full jitter, capped.
class Backoff {
 public:
  explicit Backoff(std::chrono::milliseconds cap) : cap_(cap) {}
  std::chrono::milliseconds next();
  void reset() { attempt_ = 0; }

 private:
  std::chrono::milliseconds cap_;
  int attempt_ = 0;
};

}  // namespace kaio::fetch::http
