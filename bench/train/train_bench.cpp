// Times optimizer steps of the trainer on fixed synthetic windows and prints
// one JSON line: ms per step (median after warm-up), samples/s, tokens/s,
// achieved model TFLOP/s (train/throughput.h's step_flops) and MFU over the
// device's dense peak for the dtype (-1 when the peak is unknown, as on cpu).
// Usage: kaio_train_bench MODEL FRAMES SIZE BATCH STEPS THREADS BACKEND [bf16]
// STEPS 0 trains nothing and prints the model FLOPs of one step per window
// (bench/feed.py uses it for the GPU it stands in for).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "train/model.h"
#include "train/throughput.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  if (argc < 8) {
    std::fprintf(stderr, "usage: %s MODEL FRAMES SIZE BATCH STEPS THREADS BACKEND [bf16]\n", argv[0]);
    return 2;
  }
  try {
    kaio::TrainConfig config;
    config.model = argv[1];
    const int frames = std::stoi(argv[2]), size = std::stoi(argv[3]);
    config.batch_size = std::stoi(argv[4]);
    const int steps = std::stoi(argv[5]);
    config.threads = std::stoi(argv[6]);
    config.backend = argv[7];
    config.bf16 = argc > 8 && std::string(argv[8]) == "bf16";
    const auto spec = kaio::train::model_spec(config.model);
    const auto grid = kaio::train::make_grid(spec, frames, size);
    if (steps == 0) {
      std::printf("{\"model\":\"%s\",\"flops_per_window\":%.6g}\n", config.model.c_str(),
                  kaio::train::step_flops(spec, grid, 1));
      return 0;
    }
    spdlog::set_level(spdlog::level::warn);
    auto trainer = kaio::train::Trainer::create(config, frames, size);
    std::vector<uint8_t> windows(static_cast<size_t>(config.batch_size) * frames * size * size * 3);
    for (size_t i = 0; i < windows.size(); ++i) windows[i] = static_cast<uint8_t>((i * 131 + i / 7919) % 256);
    std::vector<double> ms;
    for (int s = 0; s < steps + 2; ++s) {
      const auto start = std::chrono::steady_clock::now();
      trainer->step(windows.data(), config.batch_size);
      const double elapsed =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (s >= 2) ms.push_back(elapsed);  // the first steps allocate and warm caches
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    const double flops_per_s = kaio::train::step_flops(spec, grid, config.batch_size) / (median * 1e-3);
    const double peak = trainer->peak_flops();
    std::printf(
        "{\"model\":\"%s\",\"backend\":\"%s\",\"bf16\":%s,\"batch\":%d,\"threads\":%d,\"ms\":%.3f,"
        "\"samples_per_s\":%.3f,\"tokens_per_s\":%.1f,\"tflops\":%.4f,\"mfu\":%.4f}\n",
        config.model.c_str(), trainer->backend().c_str(), config.bf16 ? "true" : "false", config.batch_size,
        config.threads, median, 1000.0 * config.batch_size / median,
        1000.0 * config.batch_size * grid.tokens() / median, flops_per_s / 1e12, peak > 0 ? flops_per_s / peak : -1.0);
    return 0;
  } catch (const kaio::Error& e) {
    std::fprintf(stderr, "kaio_train_bench: %s\n", e.what());
    return 1;
  }
}
