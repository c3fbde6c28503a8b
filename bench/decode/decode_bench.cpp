// kaio's decode stage on a list of clips, one after another: prints the frames
// sampled, the seconds taken, the CPU seconds used and the peak RSS as one
// JSON object.
//   kaio-decode-bench --fps F|native --threads N --size S OUT_DIR CLIP...
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "common/error.h"
#include "decode/shard.h"
#include "decode/video.h"

int main(int argc, char** argv) {
  using namespace kaio::decode;
  WindowSpec spec;
  int threads = 1;
  bool native = false;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--fps" && i + 1 < argc) {
      std::string v = argv[++i];
      native = v == "native";
      if (!native) spec.fps = std::stod(v);
    } else if (a == "--threads" && i + 1 < argc) {
      threads = std::stoi(argv[++i]);
    } else if (a == "--size" && i + 1 < argc) {
      spec.size = std::stoi(argv[++i]);
    } else {
      paths.push_back(a);
    }
  }
  if (paths.size() < 2) {
    std::cerr << "usage: kaio-decode-bench --fps F|native --threads N --size S OUT_DIR CLIP...\n";
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  std::filesystem::path out = paths.front();
  int64_t frames = 0;
  auto start = std::chrono::steady_clock::now();
  try {
    for (size_t i = 1; i < paths.size(); ++i) {
      WindowSpec clip_spec = spec;
      if (native) clip_spec.fps = probe_clip(paths[i], spec).fps;
      DecodeOptions opts;
      opts.codec_threads = threads;
      auto shard = out / ("bench" + std::to_string(i) + ".shard");
      auto summary = decode_clip(paths[i], ClipOrigin{"bench", paths[i], ""}, clip_spec, shard, opts);
      frames += summary.sampled_frames;
      std::filesystem::remove(shard);
    }
  } catch (const kaio::Error& e) {
    std::cerr << "kaio-decode-bench: " << e.what() << "\n";
    return 1;
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  double cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
               static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  std::printf("{\"frames\": %lld, \"seconds\": %.4f, \"cpu_seconds\": %.4f, \"peak_rss_kb\": %ld}\n",
              static_cast<long long>(frames), seconds, cpu, usage.ru_maxrss);
  return 0;
}
