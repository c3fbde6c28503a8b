#include "common/config.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <vector>

#include "common/error.h"
#include "common/units.h"

namespace kaio {
namespace {

using nlohmann::json;

// Optimal string alignment distance (Levenshtein plus swapped neighbours),
// case-insensitive: "budjet" -> "budget" is 1, "bugdet" -> "budget" is 1.
size_t edit_distance(const std::string& a, const std::string& b) {
  auto lower = [](unsigned char c) { return static_cast<char>(std::tolower(c)); };
  size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1, 0));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) && lower(a[i - 2]) == lower(b[j - 1]))
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

// The known key nearest to an unknown one, or "" when none is near enough to
// be a likely typo: at most 2 edits, and fewer than half the longer key's
// length (so "xyz" is not taken for "level").
std::string closest_key(const std::string& unknown, const std::set<std::string>& known) {
  if (unknown.size() > 256) return "";  // no quadratic work on a hostile key
  std::string best;
  size_t best_distance = 3;
  for (const auto& k : known) {
    size_t d = edit_distance(unknown, k);
    if (d < best_distance && 2 * d < std::max(unknown.size(), k.size())) {
      best = k;
      best_distance = d;
    }
  }
  return best;
}

// Reads one JSON object, remembering which keys were used so the rest can be
// reported as unknown. Every message carries the file and the key's full path.
class Section {
 public:
  Section(const json& object, std::string path, const std::filesystem::path& file)
      : object_(object), path_(std::move(path)), file_(file) {
    if (!object_.is_object()) fail(path_.empty() ? "(top level)" : path_, "must be a JSON object");
  }

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    throw Error(ErrorKind::config, file_.string() + ": " + key + ": " + why);
  }

  std::string key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  const json* find(const std::string& key) {
    seen_.insert(key);
    auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  void string(const std::string& key, std::string& out) {
    if (auto* v = find(key)) {
      if (!v->is_string()) fail(key_path(key), "must be a string");
      out = v->get<std::string>();
    }
  }

  void path(const std::string& key, std::filesystem::path& out) {
    std::string s = out.string();
    string(key, s);
    if (s.empty()) fail(key_path(key), "must not be empty");
    out = s;
  }

  void choice(const std::string& key, std::string& out, std::initializer_list<const char*> allowed) {
    string(key, out);
    for (const char* a : allowed)
      if (out == a) return;
    std::string list;
    for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
    fail(key_path(key), "\"" + out + "\" is not one of: " + list);
  }

  void strings(const std::string& key, std::vector<std::string>& out) {
    if (auto* v = find(key)) {
      if (v->is_string()) {
        out = {v->get<std::string>()};
        return;
      }
      if (!v->is_array()) fail(key_path(key), "must be a string or an array of strings");
      out.clear();
      for (const auto& item : *v) {
        if (!item.is_string()) fail(key_path(key), "must contain only strings");
        out.push_back(item.get<std::string>());
      }
    }
  }

  template <typename Int>
  void integer(const std::string& key, Int& out, int64_t min, int64_t max) {
    if (auto* v = find(key)) {
      if (!v->is_number_integer()) fail(key_path(key), "must be an integer");
      // An unsigned above INT64_MAX would wrap negative in get<int64_t>().
      bool too_big = v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX);
      int64_t n = too_big ? INT64_MAX : v->get<int64_t>();
      if (too_big || n < min || n > max)
        fail(key_path(key), v->dump() + " is out of range [" + std::to_string(min) + ", " + std::to_string(max) + "]");
      out = static_cast<Int>(n);
    }
  }

  void number(const std::string& key, double& out, double min, double max) {
    if (auto* v = find(key)) {
      if (!v->is_number()) fail(key_path(key), "must be a number");
      double n = v->get<double>();
      if (!(n >= min && n <= max)) fail(key_path(key), std::to_string(n) + " is out of range");
      out = n;
    }
  }

  void boolean(const std::string& key, bool& out) {
    if (auto* v = find(key)) {
      if (!v->is_boolean()) fail(key_path(key), "must be true or false");
      out = v->get<bool>();
    }
  }

  // "10GB", "512MiB" or a number of bytes.
  void size(const std::string& key, uint64_t& out) {
    if (auto* v = find(key)) {
      if (v->is_number_unsigned()) {
        out = v->get<uint64_t>();
      } else if (v->is_string()) {
        auto parsed = parse_size(v->get<std::string>());
        if (!parsed)
          fail(key_path(key), "\"" + v->get<std::string>() + "\" is not a size (try \"10GB\" or \"512MiB\")");
        out = *parsed;
      } else {
        fail(key_path(key), "must be a size such as \"10GB\"");
      }
    }
  }

  // "30s", "500ms", "2m" or a number of seconds.
  void duration(const std::string& key, Millis& out) {
    if (auto* v = find(key)) {
      if (v->is_number() && v->get<double>() >= 0) {
        // The same bound parse_duration() has; beyond it the cast to int64 is undefined.
        if (!(v->get<double>() <= 1e12)) fail(key_path(key), v->dump() + " seconds is too long");
        out = Millis(static_cast<int64_t>(v->get<double>() * 1000));
      } else if (v->is_string()) {
        auto parsed = parse_duration(v->get<std::string>());
        if (!parsed)
          fail(key_path(key), "\"" + v->get<std::string>() + "\" is not a duration (try \"30s\" or \"500ms\")");
        out = *parsed;
      } else {
        fail(key_path(key), "must be a duration such as \"30s\"");
      }
    }
  }

  Section child(const std::string& key) {
    static const json empty = json::object();
    const json* v = find(key);
    return Section(v ? *v : empty, key_path(key), file_);
  }

  // The known keys of a section are the ones its reader asked for.
  void reject_unknown() const {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      if (seen_.count(it.key())) continue;
      std::string why = "unknown key";
      if (auto near = closest_key(it.key(), seen_); !near.empty()) why += "; did you mean " + key_path(near) + "?";
      fail(key_path(it.key()), why);
    }
  }

 private:
  const json& object_;
  std::string path_;
  const std::filesystem::path& file_;
  std::set<std::string> seen_;
};

// {"index": i, "count": n}: absent or null means the whole file list.
void read_partition(Section s, SourceConfig& c) {
  s.integer("count", c.partition_count, 1, 65536);
  s.integer("index", c.partition_index, 0, 65535);
  if (c.partition_index >= c.partition_count)
    s.fail(s.key_path("index"), std::to_string(c.partition_index) + " is not below source.partition.count (" +
                                    std::to_string(c.partition_count) + ")");
  s.reject_unknown();
}

void read_source(Section s, SourceConfig& c) {
  s.string("endpoint", c.endpoint);
  s.string("repo", c.repo);
  if (!c.repo.empty() && std::count(c.repo.begin(), c.repo.end(), '/') != 1)
    s.fail(s.key_path("repo"), "\"" + c.repo + "\" must look like ORG/NAME");
  s.string("revision", c.revision);
  if (c.revision.empty()) s.fail(s.key_path("revision"), "must not be empty");
  s.strings("include", c.include);
  s.strings("exclude", c.exclude);
  s.string("token_file", c.token_file);
  s.strings("captions", c.captions);
  read_partition(s.child("partition"), c);
  s.reject_unknown();
}

void read_fetch(Section s, FetchConfig& c) {
  s.integer("parallel_files", c.parallel_files, 1, 256);
  s.integer("split", c.split, 1, 64);
  s.size("split_min_size", c.split_min_size);
  s.duration("stall_timeout", c.stall_timeout);
  s.duration("connect_timeout", c.connect_timeout);
  s.duration("max_backoff", c.max_backoff);
  s.size("bandwidth_limit", c.bandwidth_limit);
  s.integer("api_requests_per_5min", c.api_requests_per_5min, 1, 1'000'000);
  s.reject_unknown();
}

void read_storage(Section s, StorageConfig& c) {
  s.path("cache_dir", c.cache_dir);
  s.path("state_dir", c.state_dir);
  s.size("budget", c.budget);
  if (c.budget < 1'000'000) s.fail(s.key_path("budget"), "must be at least 1MB");
  s.size("free_disk_floor", c.free_disk_floor);
  s.size("stream_threshold", c.stream_threshold);
  s.reject_unknown();
}

void read_decode(Section s, DecodeConfig& c) {
  s.integer("frames", c.frames, 1, 1024);
  s.integer("stride", c.stride, 1, 1 << 20);
  s.number("fps", c.fps, 0.01, 1000);
  s.integer("size", c.size, 8, 4096);
  s.choice("resize", c.resize, {"crop", "pad", "stretch"});
  s.boolean("pad_short", c.pad_short);
  s.strings("members", c.members);
  s.integer("workers", c.workers, 1, 256);
  s.integer("codec_threads", c.codec_threads, 0, 64);
  s.size("max_member_size", c.max_member_size);
  s.number("max_expand_ratio", c.max_expand_ratio, 1, 1e9);
  s.duration("timeout", c.timeout);
  s.reject_unknown();
}

void read_train(Section s, TrainConfig& c) {
  s.choice("backend", c.backend, {"auto", "hip", "cuda", "cpu", "external"});
  s.choice("model", c.model, {"tiny", "small", "base"});
  s.integer("batch_size", c.batch_size, 1, 65536);
  s.number("lr", c.lr, 0, 10);
  s.number("weight_decay", c.weight_decay, 0, 10);
  s.integer("warmup_steps", c.warmup_steps, 0, 1 << 30);
  s.number("grad_clip", c.grad_clip, 0, 1e9);
  s.number("mask_ratio", c.mask_ratio, 0.0, 0.99);
  s.integer("epochs", c.epochs, 1, 1 << 20);
  s.integer("repeat", c.repeat, 1, 1 << 20);
  s.integer("max_steps", c.max_steps, 0, INT64_MAX);
  s.integer("checkpoint_every", c.checkpoint_every, 1, 1 << 30);
  s.integer("log_every", c.log_every, 1, 1 << 30);
  s.integer("keep_checkpoints", c.keep_checkpoints, 1, 1000);
  s.integer("seed", c.seed, 0, INT64_MAX);
  s.integer("shuffle_clips", c.shuffle_clips, 1, 1 << 20);
  s.integer("threads", c.threads, 0, 4096);
  s.boolean("bf16", c.bf16);
  s.choice("world", c.world, {"auto", "single", "mpi"});
  s.boolean("ordered_reduce", c.ordered_reduce);
  s.reject_unknown();
}

void read_control(Section s, ControlConfig& c) {
  s.path("socket", c.socket);
  s.string("admin_group", c.admin_group);
  s.path("data_socket", c.data_socket);
  s.reject_unknown();
}

// "HOST:PORT" or "[V6]:PORT"; an empty string turns the endpoint off.
void read_metrics(Section s, MetricsConfig& c) {
  s.string("listen", c.listen);
  s.reject_unknown();
  c.host.clear();
  c.port = 0;
  if (c.listen.empty()) return;
  auto bad = [&](const std::string& why) {
    s.fail(s.key_path("listen"), "\"" + c.listen + "\" " + why + " (try \"127.0.0.1:9464\")");
  };
  size_t colon = c.listen.rfind(':');
  if (colon == std::string::npos) bad("has no :PORT");
  std::string host = c.listen.substr(0, colon), port = c.listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  else if (host.find(':') != std::string::npos)
    bad("is an IPv6 address without [brackets]");
  if (host.empty()) bad("has no host");
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](unsigned char ch) { return std::isdigit(ch); }))
    bad("has no port number");
  int n = std::stoi(port);
  if (n > 65535) bad("has a port above 65535");
  c.host = host;
  c.port = n;
}

void read_log(Section s, LogConfig& c) {
  s.choice("level", c.level, {"trace", "debug", "info", "warn", "error"});
  s.reject_unknown();
}

}  // namespace

Config parse_config(const std::string& json_text, const std::filesystem::path& file) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number that overflows
    throw Error(ErrorKind::config, file.string() + ": not valid JSON: " + e.what());
  }
  Config c;
  c.file = file;
  Section top(doc, "", file);
  read_source(top.child("source"), c.source);
  read_fetch(top.child("fetch"), c.fetch);
  read_storage(top.child("storage"), c.storage);
  read_decode(top.child("decode"), c.decode);
  read_train(top.child("train"), c.train);
  read_control(top.child("control"), c.control);
  read_metrics(top.child("metrics"), c.metrics);
  read_log(top.child("log"), c.log);
  top.reject_unknown();
  if (c.source.repo.empty()) top.fail("source.repo", "is required");
  return c;
}

void place_rank(Config& config, int rank, int world) {
  const std::string number = std::to_string(rank);
  auto place = [&](std::filesystem::path& path) {
    std::string text = path.string();
    for (size_t at = text.find("{rank}"); at != std::string::npos; at = text.find("{rank}", at + number.size()))
      text.replace(at, 6, number);
    path = text;
  };
  place(config.storage.cache_dir);
  place(config.storage.state_dir);
  place(config.control.socket);
  place(config.control.data_socket);
  if (world <= 1) return;
  if (config.source.partition_count > 1)
    throw Error(ErrorKind::config, config.file.string() +
                                       ": source.partition: a job of several ranks partitions the files by rank "
                                       "itself; remove source.partition");
  if (config.train.backend == "external")
    throw Error(ErrorKind::config,
                config.file.string() + ": train.backend: \"external\" cannot be one rank of an MPI job yet");
  config.source.partition_index = rank;
  config.source.partition_count = world;
}

Config load_config(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorKind::config, file.string() + ": cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), file);
}

}  // namespace kaio
