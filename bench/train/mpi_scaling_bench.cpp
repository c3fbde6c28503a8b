// Data-parallel step time over MPI: run under `mpirun -np W`, every rank
// steps on its own synthetic windows and rank 0 prints one JSON line with the
// job's samples/s per rank and the share of the step spent in the all-reduce
// (summing gradients over the ranks, waiting for the slowest included).
// Usage: mpirun -np W kaio_mpi_scaling_bench MODEL FRAMES SIZE BATCH STEPS THREADS
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "train/collective.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: mpirun -np W %s MODEL FRAMES SIZE BATCH STEPS THREADS\n", argv[0]);
    return 2;
  }
  try {
    std::shared_ptr<kaio::train::Collective> job = kaio::train::make_mpi_collective(false);
    kaio::TrainConfig config;
    config.backend = "cpu";
    config.model = argv[1];
    const int frames = std::stoi(argv[2]), size = std::stoi(argv[3]);
    config.batch_size = std::stoi(argv[4]);
    const int steps = std::stoi(argv[5]);
    config.threads = std::stoi(argv[6]);
    spdlog::set_level(spdlog::level::warn);
    auto trainer = kaio::train::Trainer::create(config, frames, size, job);
    trainer->join_job();
    std::vector<uint8_t> windows(static_cast<size_t>(config.batch_size) * frames * size * size * 3);
    for (size_t i = 0; i < windows.size(); ++i)
      windows[i] = static_cast<uint8_t>((i * 131 + i / 7919 + static_cast<size_t>(job->rank()) * 17) % 256);
    double totals[2] = {0, 0};  // step seconds, all-reduce seconds, after warm-up
    for (int s = 0; s < steps + 2; ++s) {
      const auto r = trainer->step(windows.data(), config.batch_size);
      if (s < 2) continue;  // the first steps allocate and warm caches
      totals[0] += r.compute_seconds;
      totals[1] += r.allreduce_seconds;
    }
    job->allreduce_sum(totals, 2);  // averaged over the ranks below
    if (job->rank() == 0) {
      const double step_s = totals[0] / job->world() / steps;
      std::printf(
          "{\"model\":\"%s\",\"world\":%d,\"batch\":%d,\"threads\":%d,\"ms\":%.3f,\"samples_per_s_per_rank\":%.3f,"
          "\"allreduce_share\":%.4f}\n",
          config.model.c_str(), job->world(), config.batch_size, config.threads, step_s * 1000,
          config.batch_size / step_s, totals[1] / totals[0]);
    }
    return 0;
  } catch (const kaio::Error& e) {
    std::fprintf(stderr, "kaio_mpi_scaling_bench: %s\n", e.what());
    return 1;
  }
}
