#include "fetch/hub.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "common/units.h"
#include "fetch/http.h"
#include "fetch/hub_parse.h"
#include "fetch/stream_source.h"

namespace kaio::fetch {

using namespace std::chrono_literals;

std::string resolve_endpoint(const kaio::SourceConfig& source) {
  std::string endpoint = source.endpoint;
  if (endpoint.empty()) {
    const char* env = std::getenv("HF_ENDPOINT");
    endpoint = env && *env ? env : "https://huggingface.co";
  }
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  return endpoint;
}

namespace {

std::string strip(std::string s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::optional<std::string> read_token_file(const std::filesystem::path& file, bool must_exist) {
  std::ifstream in(file);
  if (!in) {
    if (must_exist) throw Error(ErrorKind::config, "cannot read token file " + file.string());
    return std::nullopt;
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string token = strip(text.str());
  if (token.empty()) return std::nullopt;
  return token;
}

}  // namespace

std::optional<std::string> resolve_token(const kaio::SourceConfig& source) {
  std::optional<std::string> token;
  const char* env_token = std::getenv("HF_TOKEN");
  const char* env_path = std::getenv("HF_TOKEN_PATH");
  const char* hf_home = std::getenv("HF_HOME");
  const char* home = std::getenv("HOME");
  if (!source.token_file.empty()) {
    token = read_token_file(source.token_file, true);
  } else if (env_token && *env_token) {
    token = strip(env_token);
  } else if (env_path && *env_path) {
    token = read_token_file(env_path, false);
  } else if (hf_home && *hf_home) {
    token = read_token_file(std::filesystem::path(hf_home) / "token", false);
  } else if (home && *home) {
    token = read_token_file(std::filesystem::path(home) / ".cache/huggingface/token", false);
  }
  if (token && token->empty()) token.reset();
  if (token) kaio::add_secret(*token);
  return token;
}

bool glob_match(std::string_view pattern, std::string_view path) {
  if (pattern.empty()) return path.empty();
  if (pattern.starts_with("**")) {
    std::string_view rest = pattern.substr(2);
    if (rest.starts_with("/")) {
      // "**/" matches zero or more whole folders.
      rest.remove_prefix(1);
      if (glob_match(rest, path)) return true;
      for (size_t i = 0; i < path.size(); ++i)
        if (path[i] == '/' && glob_match(rest, path.substr(i + 1))) return true;
      return false;
    }
    for (size_t i = 0; i <= path.size(); ++i)
      if (glob_match(rest, path.substr(i))) return true;
    return false;
  }
  if (pattern[0] == '*') {
    for (size_t i = 0; i <= path.size(); ++i) {
      if (glob_match(pattern.substr(1), path.substr(i))) return true;
      if (i < path.size() && path[i] == '/') return false;
    }
    return false;
  }
  if (path.empty()) return false;
  if (pattern[0] == '?' ? path[0] != '/' : pattern[0] == path[0]) return glob_match(pattern.substr(1), path.substr(1));
  return false;
}

bool selected(const std::vector<std::string>& include, const std::vector<std::string>& exclude, std::string_view path) {
  auto any = [&](const std::vector<std::string>& globs) {
    return std::any_of(globs.begin(), globs.end(), [&](const std::string& g) { return glob_match(g, path); });
  };
  return (include.empty() || any(include)) && !any(exclude);
}

void NetworkTracker::ok() {
  std::lock_guard lock(mutex_);
  status_ = NetworkStatus{};
}

void NetworkTracker::waiting(const std::string& reason, std::chrono::milliseconds delay) {
  std::lock_guard lock(mutex_);
  status_ = NetworkStatus{NetworkStatus::State::waiting_network, reason, std::chrono::system_clock::now() + delay};
}

void NetworkTracker::auth_required(const std::string& reason) {
  std::lock_guard lock(mutex_);
  status_ = NetworkStatus{NetworkStatus::State::auth_required, reason, {}};
}

NetworkStatus NetworkTracker::get() const {
  std::lock_guard lock(mutex_);
  return status_;
}

ApiRateLimiter::ApiRateLimiter(int per_5min)
    : tokens_(std::max(1, per_5min)),
      capacity_(std::max(1, per_5min)),
      per_second_(std::max(1, per_5min) / 300.0),
      last_(std::chrono::steady_clock::now()) {}

bool ApiRateLimiter::try_acquire() {
  std::lock_guard lock(mutex_);
  auto now = std::chrono::steady_clock::now();
  tokens_ = std::min(capacity_, tokens_ + std::chrono::duration<double>(now - last_).count() * per_second_);
  last_ = now;
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

bool ApiRateLimiter::acquire(const std::atomic<bool>& cancelled) {
  while (!try_acquire()) {
    if (cancelled) return false;
    std::this_thread::sleep_for(50ms);
  }
  return !cancelled;
}

HubClient::HubClient(std::string endpoint, std::optional<std::string> token, const kaio::FetchConfig& config,
                     HubTuning tuning)
    : endpoint_(std::move(endpoint)),
      token_(std::move(token)),
      config_(config),
      tuning_(tuning),
      cancelled_(std::make_shared<std::atomic<bool>>(false)),
      network_(std::make_shared<NetworkTracker>()),
      limiter_(std::make_shared<ApiRateLimiter>(config.api_requests_per_5min)) {
  http::global_init();
  while (!endpoint_.empty() && endpoint_.back() == '/') endpoint_.pop_back();
  if (token_) kaio::add_secret(*token_);
}

HubClient::~HubClient() {
  cancel();
}

NetworkStatus HubClient::network_status() const {
  return network_->get();
}
void HubClient::cancel() {
  *cancelled_ = true;
}

namespace {

size_t append_body(char* data, size_t size, size_t count, void* userdata) {
  auto* body = static_cast<std::string*>(userdata);
  if (body->size() + size * count > 256u << 20) return 0;  // an API answer this big is not one
  body->append(data, size * count);
  return size * count;
}

struct CancelCheck {
  const std::atomic<bool>* cancelled;
  std::chrono::steady_clock::time_point last_progress;
  curl_off_t last_bytes = 0;
  std::chrono::milliseconds stall_timeout;
};

int api_progress(void* userdata, curl_off_t, curl_off_t now_bytes, curl_off_t, curl_off_t) {
  auto* check = static_cast<CancelCheck*>(userdata);
  auto now = std::chrono::steady_clock::now();
  if (now_bytes != check->last_bytes) {
    check->last_bytes = now_bytes;
    check->last_progress = now;
  }
  return *check->cancelled || now - check->last_progress > check->stall_timeout ? 1 : 0;
}

}  // namespace

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

// Whether `; rel="next"` (spaces allowed around ';') starts at `at`.
bool rel_next_at(const std::string& link, size_t at) {
  while (at < link.size() && is_space(link[at])) ++at;
  if (at >= link.size() || link[at] != ';') return false;
  ++at;
  while (at < link.size() && is_space(link[at])) ++at;
  return link.compare(at, 10, "rel=\"next\"") == 0;
}

}  // namespace

// Matches what the regex <([^>]+)>\s*;\s*rel="next" found, by hand: std::regex
// recurses once per character and overflowed the stack on a 50 KB header.
std::optional<std::string> next_link(const std::string& link) {
  for (size_t open = link.find('<'); open != std::string::npos;) {
    size_t close = link.find('>', open + 1);
    if (close == std::string::npos) return std::nullopt;
    if (close > open + 1 && rel_next_at(link, close + 1)) return link.substr(open + 1, close - open - 1);
    // Every '<' before `close` ends at the same '>', so none of them can match either.
    open = link.find('<', close + 1);
  }
  return std::nullopt;
}

std::string HubClient::get_json(const std::string& first_url, const std::string& what, std::string* next) {
  http::Backoff backoff(config_.max_backoff);
  std::string url = first_url;
  int redirects = 0;
  for (;;) {
    if (!limiter_->acquire(*cancelled_)) throw Error(ErrorKind::cancelled, what + ": cancelled");
    http::Easy easy(curl_easy_init());
    std::string body;
    http::Headers headers;
    CancelCheck check{cancelled_.get(), std::chrono::steady_clock::now(), 0, config_.stall_timeout};
    http::Slist request = http::request_headers(url, endpoint_, token_);
    http::apply_common_options(easy.get(), config_.connect_timeout);
    curl_easy_setopt(easy.get(), CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy.get(), CURLOPT_HTTPHEADER, request.get());
    curl_easy_setopt(easy.get(), CURLOPT_WRITEFUNCTION, append_body);
    curl_easy_setopt(easy.get(), CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(easy.get(), CURLOPT_HEADERFUNCTION, http::collect_header);
    curl_easy_setopt(easy.get(), CURLOPT_HEADERDATA, &headers);
    curl_easy_setopt(easy.get(), CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(easy.get(), CURLOPT_XFERINFOFUNCTION, api_progress);
    curl_easy_setopt(easy.get(), CURLOPT_XFERINFODATA, &check);
    char detail[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(easy.get(), CURLOPT_ERRORBUFFER, detail);
    CURLcode rc = curl_easy_perform(easy.get());
    if (*cancelled_) throw Error(ErrorKind::cancelled, what + ": cancelled");
    std::chrono::milliseconds delay{0};
    std::string reason;
    if (rc != CURLE_OK) {
      // libcurl's own words ("SSL certificate problem: self-signed certificate")
      // say more than the code's ("SSL peer certificate ... was not OK").
      std::string message = rc == CURLE_WRITE_ERROR && body.size() + CURL_MAX_WRITE_SIZE > (256u << 20)
                                ? std::string("the answer is larger than 256 MB (an endless body?)")
                                : http::curl_reason(rc, detail);
      if (!http::is_transient_curl(rc)) throw Error(ErrorKind::rejected, what + ": " + message);
      reason = what + ": " + message;
      delay = backoff.next();
    } else if (http::is_redirect(headers.status) && !headers.get("location").empty() && ++redirects <= 10) {
      url = http::join_location(url, headers.get("location"));
      continue;
    } else if (headers.status == 200) {
      network_->ok();
      if (next) *next = next_link(headers.get("link")).value_or("");
      return body;
    } else if (http::is_transient_status(headers.status)) {
      reason = what + ": HTTP " + std::to_string(headers.status);
      delay = http::server_delay(headers).value_or(backoff.next());
    } else {
      Error error = http::status_error(headers, what);
      if (error.kind() == ErrorKind::auth) network_->auth_required(error.what());
      throw error;
    }
    network_->waiting(reason, delay);
    spdlog::warn("{}; retrying in {}", kaio::redact(reason), kaio::format_duration(delay));
    http::sleep_unless_cancelled(delay, *cancelled_, what);
    url = first_url;
    redirects = 0;
  }
}

std::string HubClient::resolve_revision(const std::string& repo, const std::string& revision) {
  std::string what = "revision " + revision + " of dataset " + repo;
  std::string sha = parse_revision(get_json(http::api_url(endpoint_, repo, "revision", revision), what, nullptr), what);
  spdlog::info("dataset {} revision {} is commit {}", repo, revision, sha);
  return sha;
}

std::vector<RepoFile> HubClient::list_files(const std::string& repo, const std::string& sha,
                                            const std::vector<std::string>& include,
                                            const std::vector<std::string>& exclude) {
  std::vector<RepoFile> files;
  std::string url = http::api_url(endpoint_, repo, "tree", sha) + "?recursive=true&expand=false";
  int pages = 0;
  while (!url.empty()) {
    std::string what = "file list of dataset " + repo + "@" + sha + " (page " + std::to_string(++pages) + ")";
    std::string next;
    auto page = parse_tree_page(get_json(url, what, &next), what, include, exclude);
    files.insert(files.end(), std::make_move_iterator(page.begin()), std::make_move_iterator(page.end()));
    url = next;
  }
  std::sort(files.begin(), files.end(), [](const RepoFile& a, const RepoFile& b) { return a.path < b.path; });
  spdlog::info("dataset {}@{}: {} files selected ({} pages)", repo, sha, files.size(), pages);
  return files;
}

std::string parse_revision(const std::string& body, const std::string& what) {
  auto info = nlohmann::json::parse(body, nullptr, false);
  if (info.is_discarded() || !info.contains("sha") || !info["sha"].is_string())
    throw Error(ErrorKind::corrupt, what + ": the Hub's answer has no commit sha");
  return info["sha"];
}

std::vector<RepoFile> parse_tree_page(const std::string& body, const std::string& what,
                                      const std::vector<std::string>& include,
                                      const std::vector<std::string>& exclude) {
  std::vector<RepoFile> files;
  auto page = nlohmann::json::parse(body, nullptr, false);
  if (page.is_discarded() || !page.is_array()) throw Error(ErrorKind::corrupt, what + ": not a JSON array");
  // Fields are type-checked here: json::value() throws its own exception type
  // for a wrong one, and would turn a negative size into a huge unsigned one.
  auto text = [&what](const nlohmann::json& object, const char* key) -> std::string {
    auto it = object.find(key);
    if (it == object.end() || it->is_null()) return "";
    if (!it->is_string()) throw Error(ErrorKind::corrupt, what + ": an entry's \"" + key + "\" is not a string");
    return it->get<std::string>();
  };
  auto size = [&what](const nlohmann::json& object, uint64_t fallback) -> uint64_t {
    auto it = object.find("size");
    if (it == object.end() || it->is_null()) return fallback;
    if (!it->is_number_unsigned()) throw Error(ErrorKind::corrupt, what + ": an entry's \"size\" is not a byte count");
    return it->get<uint64_t>();
  };
  for (const auto& entry : page) {
    if (!entry.is_object()) throw Error(ErrorKind::corrupt, what + ": an entry is not a JSON object");
    if (text(entry, "type") != "file") continue;
    RepoFile f;
    f.path = text(entry, "path");
    f.size = size(entry, 0);
    f.git_oid = text(entry, "oid");
    if (entry.contains("lfs") && entry["lfs"].is_object()) {
      f.sha256 = text(entry["lfs"], "oid");
      f.size = size(entry["lfs"], f.size);
    }
    if (f.path.empty()) throw Error(ErrorKind::corrupt, what + ": an entry has no path");
    if (selected(include, exclude, f.path)) files.push_back(std::move(f));
  }
  return files;
}

std::unique_ptr<kaio::ByteSource> HubClient::open_stream(const std::string& repo, const std::string& sha,
                                                         const RepoFile& file) {
  StreamTarget target{endpoint_, token_, http::resolve_url(endpoint_, repo, sha, file.path), repo + "/" + file.path,
                      file};
  return std::make_unique<StreamSource>(std::move(target), config_, tuning_, cancelled_, network_);
}

}  // namespace kaio::fetch
