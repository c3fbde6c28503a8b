#include "tools/kaio-hub/hub_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "tools/kaio-hub/repo_index.h"

namespace kaio::hub {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

using kaio::Fd;

// Faults in force; every key of POST /_kaio/faults maps to one member.
struct Faults {
  int64_t drop_after = -1;   // cut a body after this many bytes (-1: off)
  int64_t drop_count = -1;   // bodies left to cut (-1: all)
  double rate_429 = 0;       // fraction of requests answered 429
  int retry_after = 1;       // seconds, in Retry-After and RateLimit
  double rate_5xx = 0;       // fraction of requests answered 503
  int64_t stall_after = -1;  // pause a body after this many bytes
  int64_t stall_ms = 0;
  int64_t stall_count = -1;    // bodies left to stall (-1: all)
  bool corrupt_first = false;  // flip one byte in the first full download of each file
  uint64_t throttle_bps = 0;   // per connection
  Clock::time_point outage_until{};
  int64_t outage_after_bytes = -1;  // an outage (until outage_ms 0) begins once this many file bytes were sent
  // Hostile-server faults. The string ones apply to requests whose path
  // contains the string ("" is off; "/" is every request).
  bool tree_malformed = false;  // the tree listing is cut mid-JSON
  std::string wrong_length;     // Content-Length off by wrong_length_delta, then the connection closes
  int64_t wrong_length_delta = 1000;
  std::string endless_headers;  // header lines without end
  std::string endless_body;     // a 200 with no length and a body without end
  bool control_names = false;   // the listing also names files with control characters
  // Signed CDN URLs, as the Hub's: the redirect target carries Expires= (Unix
  // seconds) and a Signature; the CDN answers 403 AccessDenied "Request has
  // expired" once it has passed, or when the URL was revoked.
  int64_t url_lifetime_ms = 3'600'000;  // an hour, as on huggingface.co
  uint64_t url_generation = 0;          // "expire_urls": true revokes every URL signed so far
  int64_t cdn_expired_count = 0;        // the next N CDN requests are refused as expired whatever their URL says
  uint64_t unranged_limit =
      0;  // a GET without Range of a larger file is refused with 400 (0: off), as the Hub does over 50 GB
  int64_t send_timeout_ms =
      0;  // a body whose reader takes no byte for this long is cut (0: off), like a CDN's send timeout

  void merge(const json& j) {
    if (j.contains("tree_malformed")) tree_malformed = j["tree_malformed"];
    if (j.contains("wrong_length")) wrong_length = j["wrong_length"];
    if (j.contains("wrong_length_delta")) wrong_length_delta = j["wrong_length_delta"];
    if (j.contains("endless_headers")) endless_headers = j["endless_headers"];
    if (j.contains("endless_body")) endless_body = j["endless_body"];
    if (j.contains("control_names")) control_names = j["control_names"];
    if (j.contains("drop_after")) drop_after = j["drop_after"];
    if (j.contains("drop_count")) drop_count = j["drop_count"];
    if (j.contains("rate_429")) rate_429 = j["rate_429"];
    if (j.contains("retry_after")) retry_after = j["retry_after"];
    if (j.contains("rate_5xx")) rate_5xx = j["rate_5xx"];
    if (j.contains("stall_after")) stall_after = j["stall_after"];
    if (j.contains("stall_ms")) stall_ms = j["stall_ms"];
    if (j.contains("stall_count")) stall_count = j["stall_count"];
    if (j.contains("corrupt_first")) corrupt_first = j["corrupt_first"];
    if (j.contains("throttle_bps")) throttle_bps = j["throttle_bps"];
    if (j.contains("outage_after_bytes")) outage_after_bytes = j["outage_after_bytes"];
    if (j.contains("outage_ms")) outage_until = Clock::now() + std::chrono::milliseconds(j["outage_ms"].get<int64_t>());
    if (j.contains("url_lifetime_ms")) url_lifetime_ms = j["url_lifetime_ms"];
    if (j.contains("expire_urls") && j["expire_urls"].get<bool>()) url_generation++;
    if (j.contains("cdn_expired_count")) cdn_expired_count = j["cdn_expired_count"];
    if (j.contains("unranged_limit")) unranged_limit = j["unranged_limit"];
    if (j.contains("send_timeout_ms")) send_timeout_ms = j["send_timeout_ms"];
  }
};

struct Stats {
  std::atomic<uint64_t> requests{0}, cdn_requests{0}, cdn_requests_with_authorization{0}, bytes_sent{0};
  std::atomic<uint64_t> drops{0}, status_429{0}, status_5xx{0}, stalls{0}, corruptions{0}, outage_closes{0},
      range_requests{0};
  std::atomic<uint64_t> malformed_trees{0}, wrong_lengths{0}, endless_headers{0}, endless_bodies{0}, control_names{0};
  // resolves: /resolve requests answered with a redirect or the file;
  // expired_urls: CDN requests refused because the signed URL had expired or
  // was revoked; unranged_refused: GETs without Range refused over unranged_limit;
  // send_timeouts: bodies cut because the reader took nothing for send_timeout_ms.
  std::atomic<uint64_t> resolves{0}, expired_urls{0}, unranged_refused{0}, send_timeouts{0};
  std::atomic<int64_t> signed_valid_until_ms{0};  // Unix ms when every URL signed so far has expired
  json to_json() const {
    return {{"requests", requests.load()},
            {"resolves", resolves.load()},
            {"expired_urls", expired_urls.load()},
            {"unranged_refused", unranged_refused.load()},
            {"send_timeouts", send_timeouts.load()},
            {"signed_urls_valid_until_ms", signed_valid_until_ms.load()},
            {"now_ms",
             std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                 .count()},
            {"cdn_requests", cdn_requests.load()},
            {"cdn_requests_with_authorization", cdn_requests_with_authorization.load()},
            {"bytes_sent", bytes_sent.load()},
            {"range_requests", range_requests.load()},
            {"faults",
             {{"drop", drops.load()},
              {"429", status_429.load()},
              {"5xx", status_5xx.load()},
              {"stall", stalls.load()},
              {"corrupt", corruptions.load()},
              {"outage_close", outage_closes.load()},
              {"tree_malformed", malformed_trees.load()},
              {"wrong_length", wrong_lengths.load()},
              {"endless_headers", endless_headers.load()},
              {"endless_body", endless_bodies.load()},
              {"control_names", control_names.load()},
              {"expired_url", expired_urls.load()},
              {"unranged_refused", unranged_refused.load()},
              {"send_timeout", send_timeouts.load()}}}};
  }
};

struct Request {
  std::string method, path, query;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  bool keep_alive = true;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

struct Response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string percent_encode(std::string_view s, bool keep_slash) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
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

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || s[i] == sep) {
      parts.emplace_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  return parts;
}

std::string query_param(const std::string& query, const std::string& key) {
  for (const auto& kv : split(query, '&')) {
    auto eq = kv.find('=');
    if (kv.substr(0, eq) == key) return eq == std::string::npos ? "" : percent_decode(kv.substr(eq + 1));
  }
  return "";
}

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 206:
      return "Partial Content";
    case 302:
      return "Found";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 416:
      return "Range Not Satisfiable";
    case 429:
      return "Too Many Requests";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

bool send_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

std::string http_date() {
  time_t now = ::time(nullptr);
  struct tm tm {};
  ::gmtime_r(&now, &tm);
  char text[64];
  std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return text;
}

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The signature of a CDN URL: FNV-1a over what it grants and the generation,
// so a URL cannot be extended by editing Expires, and revoking is a new generation.
std::string url_signature(const std::string& object, int64_t expires, uint64_t generation, uint64_t seed) {
  std::string text =
      object + "|" + std::to_string(expires) + "|" + std::to_string(generation) + "|" + std::to_string(seed);
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::string head_text(const Response& r, uint64_t content_length, bool keep_alive) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) + "\r\n";
  out += "Date: " + http_date() + "\r\n";
  for (const auto& [k, v] : r.headers) {
    // A header value never carries a line break or another control byte (a
    // requested path with "\n" in it once split the 404's X-Error-Message).
    std::string clean = v;
    for (auto& c : clean)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    out += k;
    out += ": ";
    out += clean;
    out += "\r\n";
  }
  out += "Content-Length: " + std::to_string(content_length) + "\r\n";
  out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return out;
}

Response error_response(int status, const std::string& code, const std::string& message) {
  Response r;
  r.status = status;
  if (!code.empty()) r.headers.emplace_back("X-Error-Code", code);
  r.headers.emplace_back("X-Error-Message", message);
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = json{{"error", message}}.dump();
  return r;
}

Fd listen_on(const std::string& host, int port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) throw std::runtime_error("bad listen address " + host);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd.get(), 128) != 0)
    throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + std::strerror(errno));
  return fd;
}

int bound_port(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

// Reads one request; false when the peer closed or sent garbage.
bool read_request(int fd, std::string& buffer, Request& req) {
  size_t end;
  while ((end = buffer.find("\r\n\r\n")) == std::string::npos) {
    if (buffer.size() > size_t{64} * 1024) return false;
    char chunk[8192];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<size_t>(n));
  }
  auto lines = split(std::string_view(buffer).substr(0, end), '\n');
  auto first = split(lines[0], ' ');
  if (first.size() < 3) return false;
  req = Request{};
  req.method = first[0];
  auto q = first[1].find('?');
  req.path = first[1].substr(0, q);
  if (q != std::string::npos) req.query = first[1].substr(q + 1);
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string line = lines[i];
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    size_t v = line.find_first_not_of(' ', colon + 1);
    req.headers[name] = v == std::string::npos ? "" : line.substr(v);
  }
  buffer.erase(0, end + 4);
  size_t body_size = req.headers.count("content-length") ? std::stoul(req.header("content-length")) : 0;
  if (body_size > 1 << 20) return false;
  while (buffer.size() < body_size) {
    char chunk[8192];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<size_t>(n));
  }
  req.body = buffer.substr(0, body_size);
  buffer.erase(0, body_size);
  req.keep_alive = req.header("connection") != "close";
  return true;
}

struct ByteRange {
  uint64_t start = 0, length = 0;
  bool partial = false, unsatisfiable = false;
};

ByteRange parse_range(const std::string& header, uint64_t size) {
  ByteRange r{0, size, false, false};
  if (!header.starts_with("bytes=")) return r;
  auto spec = header.substr(6);
  auto dash = spec.find('-');
  if (dash == std::string::npos || spec.find(',') != std::string::npos) return r;
  uint64_t start = dash == 0 ? 0 : std::stoull(spec.substr(0, dash));
  uint64_t last = dash + 1 < spec.size() ? std::stoull(spec.substr(dash + 1)) : size - 1;
  if (start >= size) return ByteRange{0, 0, true, true};
  last = std::min(last, size - 1);
  return ByteRange{start, last - start + 1, true, false};
}

}  // namespace

struct HubServer::State {
  HubOptions options;
  std::map<std::string, HubRepo> repos;
  Fd main_fd, cdn_fd;
  std::mutex mutex;  // guards faults, page_size, corrupted, rng
  Faults faults;
  int page_size;
  std::set<std::string> corrupted;  // repo/path already served with a flipped byte
  std::mt19937_64 rng;
  Stats stats;

  bool outage() {
    std::lock_guard lock(mutex);
    return Clock::now() < faults.outage_until;
  }
  // outage_after_bytes: the cut comes at a point of progress, not of time.
  void start_outage_when_due() {
    std::lock_guard lock(mutex);
    if (faults.outage_after_bytes < 0 || stats.bytes_sent < static_cast<uint64_t>(faults.outage_after_bytes)) return;
    faults.outage_after_bytes = -1;
    faults.outage_until = Clock::time_point::max();
  }
  bool roll(double rate) {
    std::lock_guard lock(mutex);
    return rate > 0 && std::uniform_real_distribution<double>(0, 1)(rng) < rate;
  }
  Faults snapshot() {
    std::lock_guard lock(mutex);
    return faults;
  }

  void handle_connection(Fd conn, bool cdn);
  // Returns false when the connection must close.
  bool respond(int fd, const Request& req, bool cdn);
  bool send_simple(int fd, const Request& req, const Response& r);
  // Endless headers or body, when a fault asks for them; true when it did (the connection then closes).
  bool endless(int fd, const Request& req);
  bool send_file(int fd, const Request& req, const HubRepo& repo, const HubFile& file, Response r,
                 const std::string& etag);
  bool injected_status(int fd, const Request& req);
  Response control(const Request& req);
  Response revision_info(const HubRepo& repo, const std::string& rev);
  Response tree(const HubRepo& repo, const std::string& rev, const std::string& path, const Request& req);
  Response gate(const Request& req, const HubRepo& repo);
  // The query string of a signed CDN URL for `file`, valid for url_lifetime_ms from now.
  std::string sign(const HubRepo& repo, const HubFile& file);
  // Whether a CDN request's signed URL is still good (and no fault refuses it).
  bool url_valid(const Request& req, const HubRepo& repo, const HubFile& file);
  const HubRepo* find_repo(const std::string& org, const std::string& name) const {
    auto it = repos.find(org + "/" + name);
    return it == repos.end() ? nullptr : &it->second;
  }
  bool revision_ok(const HubRepo& repo, const std::string& rev) const { return rev == "main" || rev == repo.sha; }
  std::string base_url() const { return "http://" + options.host + ":" + std::to_string(bound_port(main_fd.get())); }
};

HubServer::HubServer(HubOptions options) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
  state_->repos = index_repos(state_->options.root, state_->options.lfs_threshold);
  state_->faults.merge(state_->options.faults);
  state_->page_size = state_->options.page_size;
  state_->rng.seed(state_->options.seed);
  state_->main_fd = listen_on(state_->options.host, state_->options.port);
  state_->cdn_fd = listen_on(state_->options.cdn_host, state_->options.cdn_port);
}

HubServer::~HubServer() = default;
int HubServer::port() const {
  return bound_port(state_->main_fd.get());
}
int HubServer::cdn_port() const {
  return bound_port(state_->cdn_fd.get());
}

void HubServer::serve_forever() {
  pollfd fds[2] = {{state_->main_fd.get(), POLLIN, 0}, {state_->cdn_fd.get(), POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      Fd conn(::accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC));
      if (conn.get() < 0) continue;
      timeval timeout{60, 0};  // bounds an idle or stuck peer
      ::setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
      ::setsockopt(conn.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
      int one = 1;
      ::setsockopt(conn.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::thread([this, c = std::move(conn), cdn = i == 1]() mutable {
        state_->handle_connection(std::move(c), cdn);
      }).detach();
    }
  }
}

void HubServer::State::handle_connection(Fd conn, bool cdn) {
  std::string buffer;
  Request req;
  sockaddr_in peer{};
  socklen_t peer_len = sizeof peer;
  ::getpeername(conn.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len);
  bool loopback = (ntohl(peer.sin_addr.s_addr) >> 24) == 127;
  while (read_request(conn.get(), buffer, req)) {
    if (req.path.starts_with("/_kaio/") && !loopback) return;  // control is for local tests only
    if (!req.path.starts_with("/_kaio/") && outage()) {
      stats.outage_closes++;
      return;
    }
    stats.requests++;
    if (!respond(conn.get(), req, cdn) || !req.keep_alive) return;
  }
}

bool HubServer::State::send_simple(int fd, const Request& req, const Response& r) {
  std::string out = head_text(r, r.body.size(), req.keep_alive);
  if (req.method != "HEAD") out += r.body;
  return send_all(fd, out.data(), out.size());
}

bool HubServer::State::injected_status(int fd, const Request& req) {
  Faults f = snapshot();
  if (roll(f.rate_429)) {
    stats.status_429++;
    Response r = error_response(429, "", "Too many requests (kaio-hub fault)");
    r.headers.emplace_back("Retry-After", std::to_string(f.retry_after));
    r.headers.emplace_back("RateLimit", "\"resolvers\";r=0;t=" + std::to_string(f.retry_after));
    send_simple(fd, req, r);
    return true;
  }
  if (roll(f.rate_5xx)) {
    stats.status_5xx++;
    send_simple(fd, req, error_response(503, "", "Service unavailable (kaio-hub fault)"));
    return true;
  }
  return false;
}

bool HubServer::State::respond(int fd, const Request& req, bool cdn) {
  if (req.path.starts_with("/_kaio/")) return send_simple(fd, req, control(req));
  if (injected_status(fd, req)) return true;
  if (endless(fd, req)) return false;
  auto parts = split(req.path, '/');  // parts[0] is empty
  if (cdn) {
    // /cdn/{org}/{name}/{sha}/{path...}
    stats.cdn_requests++;
    if (!req.header("authorization").empty()) {
      stats.cdn_requests_with_authorization++;
      return send_simple(fd, req, error_response(400, "", "Authorization header is not allowed on signed CDN URLs"));
    }
    if (parts.size() < 6 || parts[1] != "cdn")
      return send_simple(fd, req, error_response(404, "", "no such CDN object"));
    const HubRepo* repo = find_repo(parts[2], parts[3]);
    std::string path =
        percent_decode(req.path.substr(("/cdn/" + parts[2] + "/" + parts[3] + "/" + parts[4] + "/").size()));
    const HubFile* file = repo && parts[4] == repo->sha ? repo->find(path) : nullptr;
    if (!file) return send_simple(fd, req, error_response(404, "", "no such CDN object"));
    if (!url_valid(req, *repo, *file)) {
      stats.expired_urls++;
      // What S3 and the Hub's Xet bridge answer for an expired signed URL.
      Response r;
      r.status = 403;
      r.headers.emplace_back("Content-Type", "application/xml");
      r.body =
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Request has "
          "expired</Message></Error>";
      return send_simple(fd, req, r);
    }
    return send_file(fd, req, *repo, *file, Response{}, "\"" + file->sha256 + "\"");
  }
  if (req.method != "GET" && req.method != "HEAD")
    return send_simple(fd, req, error_response(400, "", "unsupported method"));
  // /api/datasets/{org}/{name}/revision/{rev} and /api/datasets/{org}/{name}/tree/{rev}[/{path}]
  if (parts.size() >= 7 && parts[1] == "api" && parts[2] == "datasets") {
    const HubRepo* repo = find_repo(parts[3], parts[4]);
    if (!repo) return send_simple(fd, req, error_response(404, "RepoNotFound", "Repository not found"));
    std::string rev = percent_decode(parts[6]);
    if (!revision_ok(*repo, rev))
      return send_simple(fd, req, error_response(404, "RevisionNotFound", "Invalid rev id: " + rev));
    if (parts[5] == "revision") return send_simple(fd, req, revision_info(*repo, rev));
    if (parts[5] == "tree") {
      std::string prefix = "/api/datasets/" + parts[3] + "/" + parts[4] + "/tree/" + parts[6];
      std::string path = req.path.size() > prefix.size() ? percent_decode(req.path.substr(prefix.size() + 1)) : "";
      return send_simple(fd, req, tree(*repo, rev, path, req));
    }
  }
  // /datasets/{org}/{name}/resolve/{rev}/{path...}
  if (parts.size() >= 7 && parts[1] == "datasets" && parts[4] == "resolve") {
    const HubRepo* repo = find_repo(parts[2], parts[3]);
    if (!repo) return send_simple(fd, req, error_response(404, "RepoNotFound", "Repository not found"));
    Response denied = gate(req, *repo);
    if (denied.status != 200) return send_simple(fd, req, denied);
    std::string rev = percent_decode(parts[5]);
    if (!revision_ok(*repo, rev))
      return send_simple(fd, req, error_response(404, "RevisionNotFound", "Invalid rev id: " + rev));
    std::string path = percent_decode(
        req.path.substr(("/datasets/" + parts[2] + "/" + parts[3] + "/resolve/" + parts[5] + "/").size()));
    const HubFile* file = repo->find(path);
    if (!file) return send_simple(fd, req, error_response(404, "EntryNotFound", "Entry not found: " + path));
    Response r;
    stats.resolves++;
    r.headers = {{"X-Repo-Commit", repo->sha}, {"ETag", "\"" + (file->lfs ? file->sha256 : file->git_oid) + "\""}};
    if (file->lfs) {
      r.status = 302;
      r.headers.emplace_back("X-Linked-Etag", "\"" + file->sha256 + "\"");
      r.headers.emplace_back("X-Linked-Size", std::to_string(file->size));
      r.headers.emplace_back("Location", "http://" + options.cdn_host + ":" + std::to_string(bound_port(cdn_fd.get())) +
                                             "/cdn/" + repo->id + "/" + repo->sha + "/" +
                                             percent_encode(file->path, true) + "?" + sign(*repo, *file));
      r.body = "Found. Redirecting";
      return send_simple(fd, req, r);
    }
    return send_file(fd, req, *repo, *file, r, "\"" + file->git_oid + "\"");
  }
  return send_simple(fd, req, error_response(404, "", "Not found: " + req.path));
}

std::string HubServer::State::sign(const HubRepo& repo, const HubFile& file) {
  Faults f = snapshot();
  // Whole seconds, as the Hub's Expires: rounded up, so a URL lives at least url_lifetime_ms.
  int64_t expires = (unix_ms() + std::max<int64_t>(0, f.url_lifetime_ms) + 999) / 1000;
  int64_t until = expires * 1000;
  for (int64_t seen = stats.signed_valid_until_ms.load();
       until > seen && !stats.signed_valid_until_ms.compare_exchange_weak(seen, until);) {
  }
  return "Expires=" + std::to_string(expires) + "&Signature=" +
         url_signature(repo.id + "/" + repo.sha + "/" + file.path, expires, f.url_generation, options.seed) +
         "&Key-Pair-Id=KAIOHUB";
}

bool HubServer::State::url_valid(const Request& req, const HubRepo& repo, const HubFile& file) {
  uint64_t generation;
  {
    std::lock_guard lock(mutex);
    if (faults.cdn_expired_count > 0) {
      faults.cdn_expired_count--;
      return false;
    }
    generation = faults.url_generation;
  }
  std::string expires_text = query_param(req.query, "Expires");
  if (expires_text.empty() || expires_text.size() > 15 ||
      !std::all_of(expires_text.begin(), expires_text.end(), ::isdigit))
    return false;
  int64_t expires = std::stoll(expires_text);
  if (unix_ms() >= expires * 1000) return false;
  return query_param(req.query, "Signature") ==
         url_signature(repo.id + "/" + repo.sha + "/" + file.path, expires, generation, options.seed);
}

Response HubServer::State::gate(const Request& req, const HubRepo& repo) {
  if (options.token.empty()) return Response{};
  std::string auth = req.header("authorization");
  if (auth.empty())
    return error_response(401, "GatedRepo",
                          "Access to dataset " + repo.id + " is restricted. You must be authenticated to access it.");
  if (auth != "Bearer " + options.token)
    return error_response(403, "GatedRepo",
                          "Access to dataset " + repo.id + " is restricted and you are not in the authorized list.");
  return Response{};
}

Response HubServer::State::revision_info(const HubRepo& repo, const std::string&) {
  json siblings = json::array();
  for (const auto& f : repo.files) siblings.push_back({{"rfilename", f.path}});
  Response r;
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = json{{"id", repo.id},
                {"sha", repo.sha},
                {"private", false},
                {"gated", options.token.empty() ? json(false) : json("manual")},
                {"lastModified", "2024-01-01T00:00:00.000Z"},
                {"siblings", siblings}}
               .dump();
  return r;
}

Response HubServer::State::tree(const HubRepo& repo, const std::string& rev, const std::string& path,
                                const Request& req) {
  if (!path.empty() && !repo.is_directory(path) && !repo.find(path))
    return error_response(404, "EntryNotFound", "Entry not found: " + path);
  bool recursive = query_param(req.query, "recursive") == "true" || query_param(req.query, "recursive") == "1";
  std::string prefix = path.empty() ? "" : path + "/";
  std::vector<json> entries;
  std::set<std::string> dirs;
  for (const auto& f : repo.files) {
    if (!f.path.starts_with(prefix)) continue;
    std::string rest = f.path.substr(prefix.size());
    // Directories on the way to the file, as the Hub lists them.
    for (size_t slash = rest.find('/'); slash != std::string::npos;
         slash = recursive ? rest.find('/', slash + 1) : std::string::npos) {
      std::string dir = prefix + rest.substr(0, slash);
      if (dirs.insert(dir).second)
        entries.push_back({{"type", "directory"}, {"oid", std::string(40, '0')}, {"size", 0}, {"path", dir}});
    }
    if (!recursive && rest.find('/') != std::string::npos) continue;
    json e = {{"type", "file"}, {"oid", f.git_oid}, {"size", f.size}, {"path", f.path}};
    if (f.lfs) e["lfs"] = {{"oid", f.sha256}, {"size", f.size}, {"pointerSize", f.pointer_size}};
    entries.push_back(std::move(e));
  }
  size_t page;
  {
    std::lock_guard lock(mutex);
    page = static_cast<size_t>(std::max(1, page_size));
  }
  std::string cursor_text = query_param(req.query, "cursor");
  size_t cursor = cursor_text.empty() ? 0 : std::stoul(cursor_text);
  json body = json::array();
  for (size_t i = cursor; i < entries.size() && i < cursor + page; ++i) body.push_back(entries[i]);
  Response r;
  r.headers.emplace_back("Content-Type", "application/json");
  if (cursor + page < entries.size()) {
    std::string next = base_url() + "/api/datasets/" + repo.id + "/tree/" + percent_encode(rev, false) +
                       (path.empty() ? "" : "/" + percent_encode(path, true)) +
                       "?recursive=" + (recursive ? "true" : "false") +
                       "&expand=false&cursor=" + std::to_string(cursor + page);
    r.headers.emplace_back("Link", "<" + next + ">; rel=\"next\"");
  }
  Faults f = snapshot();
  if (f.control_names && cursor == 0) {
    // Names a careless client would echo into a terminal or a log line.
    for (const char* name : {"ctl/bell\a\b\x7f.tar.gz", "ctl/esc\x1b[31mred\x1b[0m.tar.gz", "ctl/new\nline\r.tar.gz"}) {
      body.push_back({{"type", "file"}, {"oid", std::string(40, 'e')}, {"size", 1234}, {"path", prefix + name}});
      stats.control_names++;
    }
  }
  r.body = body.dump();
  if (f.tree_malformed) {
    r.body = r.body.substr(0, r.body.size() / 2) + "\x01{\"";
    stats.malformed_trees++;
  }
  return r;
}

Response HubServer::State::control(const Request& req) {
  Response r;
  r.headers.emplace_back("Content-Type", "application/json");
  if (req.path == "/_kaio/stats") {
    r.body = stats.to_json().dump();
  } else if (req.path == "/_kaio/faults" && req.method == "POST") {
    try {
      json j = json::parse(req.body);
      std::lock_guard lock(mutex);
      faults.merge(j);
      if (j.contains("page_size")) page_size = j["page_size"];
      r.body = "{}";
    } catch (const std::exception& e) {
      return error_response(400, "", std::string("bad faults JSON: ") + e.what());
    }
  } else {
    return error_response(404, "", "unknown control path " + req.path);
  }
  return r;
}

bool HubServer::State::send_file(int fd, const Request& req, const HubRepo& repo, const HubFile& file, Response r,
                                 const std::string& etag) {
  r.headers.emplace_back("Accept-Ranges", "bytes");
  if (r.headers.end() == std::find_if(r.headers.begin(), r.headers.end(), [](auto& h) { return h.first == "ETag"; }))
    r.headers.emplace_back("ETag", etag);
  r.headers.emplace_back("Content-Type", "application/octet-stream");
  Faults f = snapshot();
  if (req.method == "GET" && f.unranged_limit > 0 && file.size > f.unranged_limit && req.header("range").empty()) {
    stats.unranged_refused++;
    return send_simple(fd, req,
                       error_response(400, "",
                                      "Files over " + std::to_string(f.unranged_limit) +
                                          " bytes are only served with Range (" + repo.id + "/" + file.path + ")"));
  }
  std::string if_range = req.header("if-range");
  ByteRange range = parse_range(if_range.empty() || if_range == etag ? req.header("range") : "", file.size);
  if (range.partial) stats.range_requests++;
  if (range.unsatisfiable) {
    r.status = 416;
    r.headers.emplace_back("Content-Range", "bytes */" + std::to_string(file.size));
    return send_simple(fd, req, r);
  }
  if (range.partial) {
    r.status = 206;
    r.headers.emplace_back("Content-Range", "bytes " + std::to_string(range.start) + "-" +
                                                std::to_string(range.start + range.length - 1) + "/" +
                                                std::to_string(file.size));
  }
  bool wrong = !f.wrong_length.empty() && req.path.find(f.wrong_length) != std::string::npos;
  uint64_t declared = range.length;
  if (wrong) {
    declared = static_cast<uint64_t>(std::max<int64_t>(0, static_cast<int64_t>(range.length) + f.wrong_length_delta));
    stats.wrong_lengths++;
  }
  std::string head = head_text(r, declared, req.keep_alive && !wrong);
  if (!send_all(fd, head.data(), head.size())) return false;
  if (req.method == "HEAD") return !wrong;

  int64_t drop_at = -1, stall_at = -1, flip_at = -1;
  {
    std::lock_guard lock(mutex);
    if (f.drop_after >= 0 && faults.drop_count != 0 && static_cast<uint64_t>(f.drop_after) < range.length) {
      drop_at = f.drop_after;
      if (faults.drop_count > 0) faults.drop_count--;
    }
    if (f.stall_after >= 0 && faults.stall_count != 0 && static_cast<uint64_t>(f.stall_after) < range.length) {
      stall_at = f.stall_after;
      if (faults.stall_count > 0) faults.stall_count--;
    }
    if (f.corrupt_first && range.start == 0 && range.length == file.size && file.size > 0 &&
        corrupted.insert(repo.id + "/" + file.path).second)
      flip_at = static_cast<int64_t>(file.size / 2);
  }
  Fd in(::open(file.disk.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) return false;
  // A send that moves no byte for send_timeout_ms fails with EAGAIN (0: never).
  timeval send_timeout{static_cast<time_t>(f.send_timeout_ms / 1000),
                       static_cast<suseconds_t>(f.send_timeout_ms % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
  // Small chunks when throttled keep the pace smooth.
  size_t chunk_size = f.throttle_bps ? std::clamp<size_t>(f.throttle_bps / 20, 1024, 1 << 20) : 1 << 20;
  std::vector<char> buf(chunk_size);
  auto started = Clock::now();
  uint64_t sent = 0;
  while (sent < range.length) {
    if (Clock::now() < snapshot().outage_until) {
      stats.outage_closes++;
      return false;
    }
    uint64_t want = std::min<uint64_t>(chunk_size, range.length - sent);
    if (drop_at >= 0 && sent + want > static_cast<uint64_t>(drop_at)) want = static_cast<uint64_t>(drop_at) - sent;
    if (stall_at >= 0 && sent + want > static_cast<uint64_t>(stall_at)) want = static_cast<uint64_t>(stall_at) - sent;
    if (drop_at >= 0 && sent == static_cast<uint64_t>(drop_at)) {
      stats.drops++;
      return false;
    }
    if (stall_at >= 0 && sent == static_cast<uint64_t>(stall_at)) {
      stats.stalls++;
      std::this_thread::sleep_for(std::chrono::milliseconds(f.stall_ms));
      stall_at = -1;
      continue;
    }
    ssize_t n = ::pread(in.get(), buf.data(), want, static_cast<off_t>(range.start + sent));
    if (n <= 0) return false;
    uint64_t abs = range.start + sent;
    if (flip_at >= 0 && static_cast<uint64_t>(flip_at) >= abs &&
        static_cast<uint64_t>(flip_at) < abs + static_cast<uint64_t>(n)) {
      buf[static_cast<size_t>(flip_at - static_cast<int64_t>(abs))] ^= 0x5a;
      stats.corruptions++;
    }
    if (!send_all(fd, buf.data(), static_cast<size_t>(n))) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) stats.send_timeouts++;
      return false;
    }
    sent += static_cast<uint64_t>(n);
    stats.bytes_sent += static_cast<uint64_t>(n);
    start_outage_when_due();
    if (f.throttle_bps) {
      auto due = started + std::chrono::microseconds(sent * 1'000'000 / f.throttle_bps);
      std::this_thread::sleep_until(due);
    }
  }
  return !wrong;  // a wrong length leaves the connection unusable
}

bool HubServer::State::endless(int fd, const Request& req) {
  Faults f = snapshot();
  bool headers = !f.endless_headers.empty() && req.path.find(f.endless_headers) != std::string::npos;
  bool body = !f.endless_body.empty() && req.path.find(f.endless_body) != std::string::npos;
  if (!headers && !body) return false;
  (headers ? stats.endless_headers : stats.endless_bodies)++;
  std::string head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n";
  if (!headers) head += "\r\n";
  if (!send_all(fd, head.data(), head.size())) return true;
  std::string chunk =
      headers ? "X-Kaio-Endless: " + std::string(4000, 'h') + "\r\n" : std::string(size_t{64} * 1024, '[');
  // Until the client gives up (or 10 minutes, so the thread ends some day).
  auto until = Clock::now() + std::chrono::minutes(10);
  while (Clock::now() < until && send_all(fd, chunk.data(), chunk.size())) stats.bytes_sent += chunk.size();
  return true;
}

}  // namespace kaio::hub
