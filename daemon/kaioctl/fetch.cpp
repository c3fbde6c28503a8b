// `kaioctl fetch`: downloads a dataset selection into a folder with the Hub
// client and downloader of fetch/, resuming and verifying every file.
// Exit 0 ok, 1 failure, 2 usage.
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "daemon/kaioctl/commands.h"
#include "fetch/downloader.h"
#include "fetch/hash.h"
#include "fetch/hub.h"

namespace kaio::ctl {
namespace {

namespace fs = std::filesystem;
using namespace kaio::fetch;

const char* kUsage =
    "usage: kaioctl fetch --repo ORG/NAME [--revision R] [--include GLOB]... [--exclude GLOB]... --out DIR\n"
    "                     [--endpoint URL] [--token-file F] [--parallel N] [--split N] [--split-min-size SIZE]\n"
    "                     [--stall-timeout DUR] [--max-backoff DUR] [--bandwidth-limit SIZE] [--log-level L]\n";

struct FetchArgs {
  SourceConfig source;
  FetchConfig fetch;
  fs::path out;
  std::string log_level = "info";
};

FetchArgs parse_args(const std::vector<std::string>& argv) {
  FetchArgs a;
  a.source.revision = "main";
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argv.size()) throw Error(ErrorKind::usage, arg + " needs a value");
      return argv[++i];
    };
    auto size = [&]() {
      std::string v = value();
      auto s = parse_size(v);
      if (!s) throw Error(ErrorKind::usage, arg + ": not a size: " + v);
      return *s;
    };
    auto duration = [&]() {
      std::string v = value();
      auto d = parse_duration(v);
      if (!d) throw Error(ErrorKind::usage, arg + ": not a duration: " + v);
      return *d;
    };
    auto count = [&]() {
      std::string v = value();
      try {
        int n = std::stoi(v);
        if (n >= 1) return n;
      } catch (const std::exception&) {
      }
      throw Error(ErrorKind::usage, arg + ": not a positive number: " + v);
    };
    if (arg == "--repo")
      a.source.repo = value();
    else if (arg == "--revision")
      a.source.revision = value();
    else if (arg == "--include")
      a.source.include.push_back(value());
    else if (arg == "--exclude")
      a.source.exclude.push_back(value());
    else if (arg == "--out")
      a.out = value();
    else if (arg == "--endpoint")
      a.source.endpoint = value();
    else if (arg == "--token-file")
      a.source.token_file = value();
    else if (arg == "--parallel")
      a.fetch.parallel_files = count();
    else if (arg == "--split")
      a.fetch.split = count();
    else if (arg == "--split-min-size")
      a.fetch.split_min_size = size();
    else if (arg == "--stall-timeout")
      a.fetch.stall_timeout = duration();
    else if (arg == "--max-backoff")
      a.fetch.max_backoff = duration();
    else if (arg == "--bandwidth-limit")
      a.fetch.bandwidth_limit = size();
    else if (arg == "--log-level")
      a.log_level = value();
    else
      throw Error(ErrorKind::usage, "unknown option " + arg);
  }
  if (a.source.repo.empty() || a.source.repo.find('/') == std::string::npos)
    throw Error(ErrorKind::usage, "--repo ORG/NAME is required");
  if (a.out.empty()) throw Error(ErrorKind::usage, "--out DIR is required");
  return a;
}

// A repo path must stay inside the output folder.
bool safe_relative(const std::string& path) {
  fs::path p(path);
  if (path.empty() || p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == ".." || part == ".") return false;
  return true;
}

bool already_present(const fs::path& dest, const RepoFile& f) {
  std::error_code ec;
  if (!fs::is_regular_file(dest, ec) || fs::file_size(dest, ec) != f.size) return false;
  bool lfs = !f.sha256.empty();
  return hash_file(dest, lfs ? HashKind::sha256 : HashKind::sha1, !lfs) == (lfs ? f.sha256 : f.git_oid);
}

void show_progress(const Progress& p, bool tty) {
  double fraction = p.total ? static_cast<double>(p.done) / static_cast<double>(p.total) : 1.0;
  std::string eta = p.eta ? format_duration(std::chrono::duration_cast<std::chrono::milliseconds>(*p.eta)) : "-";
  char line[256];
  std::snprintf(line, sizeof line, "%5.1f%%  %s / %s  %s/s  eta %s  files done %zu, failed %zu, left %zu",
                fraction * 100, format_size(p.done).c_str(), format_size(p.total).c_str(),
                format_size(static_cast<uint64_t>(p.bytes_per_second)).c_str(), eta.c_str(), p.finished, p.failed,
                p.pending);
  if (tty) {
    int width = 30, filled = static_cast<int>(fraction * width);
    std::fprintf(stderr, "\r[%s%s] %s", std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(),
                 line);
  } else {
    std::fprintf(stderr, "progress: %s\n", line);
  }
  std::fflush(stderr);
}

int fetch(const FetchArgs& a) {
  std::string endpoint = resolve_endpoint(a.source);
  std::optional<std::string> token = resolve_token(a.source);
  HubClient client(endpoint, token, a.fetch);
  std::string sha = client.resolve_revision(a.source.repo, a.source.revision);
  std::vector<RepoFile> files = client.list_files(a.source.repo, sha, a.source.include, a.source.exclude);

  Downloader downloader(endpoint, token, a.fetch, client.limiter());
  std::mutex mutex;
  std::condition_variable changed;
  size_t outstanding = 0;
  std::vector<std::string> failures;
  for (const auto& f : files) {
    if (!safe_relative(f.path)) {
      failures.push_back("refusing unsafe repo path " + f.path);
      continue;
    }
    fs::path dest = a.out / fs::path(f.path);
    if (already_present(dest, f)) {
      spdlog::info("{}: already present and verified", dest.string());
      continue;
    }
    {
      std::lock_guard lock(mutex);
      ++outstanding;
    }
    downloader.submit({a.source.repo, sha, f, dest}, [&](const DownloadResult& r) {
      std::lock_guard lock(mutex);
      if (!r.ok) failures.push_back(r.message);
      --outstanding;
      changed.notify_all();
    });
  }
  const bool tty = ::isatty(STDERR_FILENO);
  auto last_line = std::chrono::steady_clock::now();
  std::unique_lock lock(mutex);
  while (outstanding > 0) {
    changed.wait_for(lock, std::chrono::milliseconds(500));
    auto now = std::chrono::steady_clock::now();
    if (tty || now - last_line >= std::chrono::seconds(5)) {
      last_line = now;
      lock.unlock();
      show_progress(downloader.progress(), tty);
      lock.lock();
    }
  }
  lock.unlock();
  downloader.stop();
  if (tty) std::fprintf(stderr, "\n");
  for (const auto& f : failures) std::fprintf(stderr, "kaioctl fetch: failed: %s\n", kaio::redact(f).c_str());
  std::fprintf(stderr, "kaioctl fetch: %s@%s: %zu files selected, %zu failed, into %s\n", a.source.repo.c_str(),
               sha.c_str(), files.size(), failures.size(), a.out.c_str());
  return failures.empty() ? 0 : 1;
}

}  // namespace

int fetch_command(const Invocation& in) {
  FetchArgs args;
  try {
    args = parse_args(in.args);
  } catch (const Error& e) {
    std::fprintf(stderr, "kaioctl fetch: %s\n%s", e.what(), kUsage);
    return 2;
  }
  setup_logging(args.log_level, "kaioctl");
  try {
    return fetch(args);
  } catch (const Error& e) {
    std::fprintf(stderr, "kaioctl fetch: error (%s): %s\n", std::string(to_string(e.kind())).c_str(),
                 kaio::redact(e.what()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kaioctl fetch: error: %s\n", kaio::redact(e.what()).c_str());
    return 1;
  }
}

}  // namespace kaio::ctl
