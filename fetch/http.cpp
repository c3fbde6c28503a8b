#include "fetch/http.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <mutex>
#include <random>
#include <thread>

namespace kaio::fetch::http {

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

namespace {

std::string encode(std::string_view text, bool keep_slash) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 15];
    }
  }
  return out;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

std::string encode_path(std::string_view path) {
  return encode(path, true);
}
std::string encode_component(std::string_view text) {
  return encode(text, false);
}

std::string resolve_url(const std::string& endpoint, const std::string& repo, const std::string& revision,
                        const std::string& path) {
  return endpoint + "/datasets/" + repo + "/resolve/" + encode_component(revision) + "/" + encode_path(path);
}

std::string api_url(const std::string& endpoint, const std::string& repo, const std::string& what,
                    const std::string& revision) {
  return endpoint + "/api/datasets/" + repo + "/" + what + "/" + encode_component(revision);
}

std::string origin_of(std::string_view url) {
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return "";
  size_t host_end = url.find_first_of("/?#", scheme_end + 3);
  return lower(std::string(url.substr(0, host_end)));
}

std::string join_location(const std::string& base, const std::string& location) {
  if (!origin_of(location).empty()) return location;
  if (location.starts_with("/")) return origin_of(base) + location;
  size_t q = base.find('?');
  std::string dir = base.substr(0, base.rfind('/', q) + 1);
  return dir + location;
}

std::string Headers::get(const std::string& name) const {
  auto it = values.find(name);
  return it == values.end() ? "" : it->second;
}

size_t collect_header(char* data, size_t size, size_t count, void* userdata) {
  auto* headers = static_cast<Headers*>(userdata);
  std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) {
    headers->values.clear();
    size_t sp = line.find(' ');
    headers->status = sp == std::string_view::npos ? 0 : std::atol(std::string(line.substr(sp + 1, 3)).c_str());
  } else if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    headers->values[lower(std::string(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  return size * count;
}

void apply_common_options(CURL* h, std::chrono::milliseconds connect_timeout) {
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);  // we follow redirects ourselves to control Authorization
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "kaio/0.1");
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
}

Slist request_headers(const std::string& url, const std::string& endpoint, const std::optional<std::string>& token,
                      const std::string& range, const std::string& if_range) {
  Slist list;
  auto add = [&](const std::string& h) { list.reset(curl_slist_append(list.release(), h.c_str())); };
  add("Accept-Encoding: identity");
  if (token && origin_of(url) == origin_of(endpoint)) add("Authorization: Bearer " + *token);
  if (!range.empty()) add("Range: " + range);
  if (!if_range.empty()) add("If-Range: " + if_range);
  return list;
}

bool SignedUrl::usable(std::chrono::steady_clock::time_point now, std::chrono::milliseconds max_age,
                       std::chrono::milliseconds margin) const {
  if (url.empty() || now - resolved_at >= max_age) return false;
  return !expires || now < *expires - margin;
}

namespace {

// The value of query parameter `key` (exact name), undecoded.
std::optional<std::string_view> query_value(std::string_view url, std::string_view key) {
  size_t q = url.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view query = url.substr(q + 1);
  if (size_t hash = query.find('#'); hash != std::string_view::npos) query = query.substr(0, hash);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    size_t eq = kv.find('=');
    if (kv.substr(0, eq) == key) return eq == std::string_view::npos ? std::string_view() : kv.substr(eq + 1);
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<int64_t> digits_value(std::string_view text) {
  int64_t n = 0;
  if (text.empty() || text.size() > 15) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < 0) return std::nullopt;
  return n;
}

// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// X-Amz-Date: 20250101T000000Z.
std::optional<int64_t> amz_date(std::string_view text) {
  if (text.size() != 16 || text[8] != 'T' || text[15] != 'Z') return std::nullopt;
  auto field = [&](size_t at, size_t n) { return digits_value(text.substr(at, n)); };
  auto y = field(0, 4), mo = field(4, 2), d = field(6, 2), h = field(9, 2), mi = field(11, 2), s = field(13, 2);
  if (!y || !mo || !d || !h || !mi || !s || *mo < 1 || *mo > 12 || *d < 1 || *d > 31 || *h > 23 || *mi > 59 || *s > 60)
    return std::nullopt;
  return days_from_civil(*y, static_cast<unsigned>(*mo), static_cast<unsigned>(*d)) * 86400 + *h * 3600 + *mi * 60 + *s;
}

}  // namespace

std::optional<std::chrono::system_clock::time_point> url_expiry(std::string_view url) {
  std::optional<int64_t> at;
  auto earliest = [&](std::optional<int64_t> t) {
    if (t && (!at || *t < *at)) at = t;
  };
  if (auto e = query_value(url, "Expires")) earliest(digits_value(*e));
  auto amz = query_value(url, "X-Amz-Date");
  auto amz_expires = query_value(url, "X-Amz-Expires");
  if (amz && amz_expires) {
    auto start = amz_date(*amz);
    auto seconds = digits_value(*amz_expires);
    if (start && seconds) earliest(*start + *seconds);
  }
  if (!at) return std::nullopt;
  return std::chrono::system_clock::time_point(std::chrono::seconds(*at));
}

SignedUrl signed_url(std::string url, const Headers& redirect, std::chrono::steady_clock::time_point now) {
  SignedUrl s;
  s.resolved_at = now;
  if (auto expiry = url_expiry(url)) {
    // The signer's clock: the redirect's Date (whole seconds, so the true time
    // may be up to a second later), else ours.
    auto reference = std::chrono::system_clock::now();
    std::string date = redirect.get("date");
    if (time_t t = date.empty() ? -1 : curl_getdate(date.c_str(), nullptr); t >= 0)
      reference = std::chrono::system_clock::from_time_t(t) + std::chrono::seconds(1);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*expiry - reference);
    // Held to a day either way, so a nonsense value neither overflows nor pins a URL for ever.
    left = std::clamp<std::chrono::milliseconds>(left, -std::chrono::hours(24), std::chrono::hours(24));
    s.expires = now + left;
  }
  s.url = std::move(url);
  return s;
}

bool is_cdn_refusal(long status) {
  return status == 400 || status == 401 || status == 403 || status == 410;
}

bool is_redirect(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

bool is_transient_status(long status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

std::string curl_reason(CURLcode code, const char* detail) {
  return detail && *detail ? detail : curl_easy_strerror(code);
}

bool is_transient_curl(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_ABORTED_BY_CALLBACK:
      return true;
    default:
      return false;
  }
}

Error status_error(const Headers& headers, const std::string& what) {
  std::string code = headers.get("x-error-code");
  std::string message = headers.get("x-error-message");
  std::string text = what + ": HTTP " + std::to_string(headers.status) + (code.empty() ? "" : " " + code) +
                     (message.empty() ? "" : ": " + message);
  if (code == "GatedRepo" || headers.status == 401 || headers.status == 403) {
    return Error(ErrorKind::auth,
                 text + " (gated dataset: accept its terms on the Hub, then set HF_TOKEN or source.token_file)");
  }
  if (headers.status == 404) return Error(ErrorKind::not_found, text);
  if (is_transient_status(headers.status)) return Error(ErrorKind::transient, text);
  return Error(ErrorKind::rejected, text);  // another 4xx: retrying will not help
}

namespace {

// A server asking for more than a day is held to a day: std::stol threw on
// 20 digits, and seconds near INT64_MAX overflowed converting to milliseconds.
constexpr uint64_t kMaxServerDelaySeconds = 86'400;

std::chrono::milliseconds delay_of(std::string_view digits) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec == std::errc::result_out_of_range || n > kMaxServerDelaySeconds) n = kMaxServerDelaySeconds;
  (void)end;
  return std::chrono::seconds(static_cast<int64_t>(n) + 1);
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

// The digits after the first `;\s*r=0\s*;\s*t=` in a RateLimit header, by
// hand: std::regex recursed once per digit and overflowed the stack.
std::optional<std::string_view> rate_limit_reset(std::string_view rl) {
  for (size_t semi = rl.find(';'); semi != std::string_view::npos; semi = rl.find(';', semi + 1)) {
    size_t at = semi + 1;
    auto skip = [&] {
      while (at < rl.size() && is_space(rl[at])) ++at;
    };
    auto take = [&](std::string_view word) {
      if (rl.substr(at, word.size()) != word) return false;
      at += word.size();
      return true;
    };
    skip();
    if (!take("r=0")) continue;
    skip();
    if (!take(";")) continue;
    skip();
    if (!take("t=")) continue;
    size_t digits = at;
    while (at < rl.size() && std::isdigit(static_cast<unsigned char>(rl[at]))) ++at;
    if (at > digits) return rl.substr(digits, at - digits);
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::chrono::milliseconds> server_delay(const Headers& headers) {
  std::string retry_after = headers.get("retry-after");
  if (!retry_after.empty() && std::all_of(retry_after.begin(), retry_after.end(), ::isdigit))
    return delay_of(retry_after);
  std::string rl = headers.get("ratelimit");
  if (auto digits = rate_limit_reset(rl)) return delay_of(*digits);
  return std::nullopt;
}

void sleep_unless_cancelled(std::chrono::milliseconds delay, const std::atomic<bool>& cancelled,
                            const std::string& what) {
  auto until = std::chrono::steady_clock::now() + delay;
  while (std::chrono::steady_clock::now() < until) {
    if (cancelled) throw Error(ErrorKind::cancelled, what + ": cancelled");
    auto left = until - std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(50), left));
  }
  if (cancelled) throw Error(ErrorKind::cancelled, what + ": cancelled");
}

std::chrono::milliseconds Backoff::next() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  int64_t base = 500LL << std::min(attempt_, 20);
  ++attempt_;
  base = std::min<int64_t>(base, cap_.count());
  int64_t jitter = std::uniform_int_distribution<int64_t>(0, base / 2)(rng);
  return std::chrono::milliseconds(base / 2 + jitter);
}

}  // namespace kaio::fetch::http
