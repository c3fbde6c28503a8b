// kaio's decode stage on a list of clips: prints the frames sampled, the
// frames decoded, the packets dropped, the seconds taken, the CPU seconds used
// and the peak RSS as one JSON object.
//   kaio-decode-bench --fps F|native --threads N [--workers W] [--every-frame] --size S OUT_DIR CLIP...
// --threads is FFmpeg's per clip (decode.codec_threads); --workers decodes
// that many clips at once, each on its own thread (decode.workers, how kaiod
// uses more cores); --every-frame turns off the shortcuts (the full decode
// the shortcuts are measured against).
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include <libavutil/log.h>
}

#include "common/error.h"
#include "decode/shard.h"
#include "decode/video.h"

namespace {

struct Options {
  kaio::decode::WindowSpec spec;
  bool native = false;
  int threads = 1;
  int workers = 1;
  bool every_frame = false;
  std::filesystem::path out;
  std::vector<std::string> clips;
};

struct Totals {
  std::atomic<int64_t> sampled{0}, decoded{0}, dropped{0};
};

// Decodes clips[i] for the i a shared counter hands out, until none is left.
void decode_some(const Options& o, std::atomic<size_t>& next, Totals& totals) {
  using namespace kaio::decode;
  for (size_t i = next++; i < o.clips.size(); i = next++) {
    WindowSpec clip_spec = o.spec;
    if (o.native) clip_spec.fps = probe_clip(o.clips[i], o.spec).fps;
    DecodeOptions opts;
    opts.codec_threads = o.threads;
    opts.decode_every_frame = o.every_frame;
    auto shard = o.out / ("bench" + std::to_string(i) + ".shard");
    auto summary = decode_clip(o.clips[i], ClipOrigin{"bench", o.clips[i], ""}, clip_spec, shard, opts);
    totals.sampled += summary.sampled_frames;
    totals.decoded += summary.decoded_frames;
    totals.dropped += summary.packets_dropped;
    std::filesystem::remove(shard);
  }
}

// Runs `workers` threads of decode_some; rethrows the first error.
void decode_all(const Options& o, Totals& totals) {
  std::atomic<size_t> next{0};
  std::mutex failed_mutex;
  std::exception_ptr failed;
  {
    std::vector<std::jthread> threads;
    threads.reserve(static_cast<size_t>(o.workers));
    for (int w = 0; w < o.workers; ++w) {
      threads.emplace_back([&] {
        try {
          decode_some(o, next, totals);
        } catch (...) {
          std::lock_guard lock(failed_mutex);
          if (!failed) failed = std::current_exception();
          next = o.clips.size();  // the others stop after their current clip
        }
      });
    }
  }
  if (failed) std::rethrow_exception(failed);
}

bool parse(int argc, char** argv, Options& o) {
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--fps" && i + 1 < argc) {
      std::string v = argv[++i];
      o.native = v == "native";
      if (!o.native) o.spec.fps = std::stod(v);
    } else if (a == "--threads" && i + 1 < argc) {
      o.threads = std::stoi(argv[++i]);
    } else if (a == "--workers" && i + 1 < argc) {
      o.workers = std::stoi(argv[++i]);
    } else if (a == "--size" && i + 1 < argc) {
      o.spec.size = std::stoi(argv[++i]);
    } else if (a == "--every-frame") {
      o.every_frame = true;
    } else {
      paths.push_back(a);
    }
  }
  if (paths.size() < 2 || o.workers < 1) return false;
  o.out = paths.front();
  o.clips.assign(paths.begin() + 1, paths.end());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) {
    std::cerr << "usage: kaio-decode-bench --fps F|native --threads N [--workers W] [--every-frame] --size S OUT_DIR "
                 "CLIP...\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  av_log_set_level(AV_LOG_ERROR);  // libdav1d's version line per clip is noise in the figures
  Totals totals;
  auto start = std::chrono::steady_clock::now();
  try {
    decode_all(o, totals);
  } catch (const kaio::Error& e) {
    std::cerr << "kaio-decode-bench: " << e.what() << "\n";
    return 1;
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  double cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
               static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  std::printf(
      "{\"frames\": %lld, \"decoded_frames\": %lld, \"packets_dropped\": %lld, \"seconds\": %.4f, "
      "\"cpu_seconds\": %.4f, \"peak_rss_kb\": %ld}\n",
      static_cast<long long>(totals.sampled.load()), static_cast<long long>(totals.decoded.load()),
      static_cast<long long>(totals.dropped.load()), seconds, cpu, usage.ru_maxrss);
  return 0;
}
