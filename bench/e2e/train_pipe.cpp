// kaio-train-pipe: kaio's trainer step behind a pipe, for the sequential
// Python baseline of bench/e2e.sh. It builds the trainer exactly as kaiod does
// from the same config file (model, batch, threads, lr, seed), so the baseline
// and kaiod pay for the same optimizer steps; only the way data reaches the
// step differs.
//
// stdout, first: {"checkpoint_bytes": N} once the trainer is built.
// stdin, a sequence of records:
//   'W' + frames*size*size*3 bytes   one window; a step runs at every batch_size windows
//   'C' + path + '\n'                checkpoint to path (durable), then "ok\n" on stdout
//   EOF                              a last step on a partial batch, then one JSON line
//                                    {"steps","samples","train_seconds","loss"} on stdout
// Usage: kaio-train-pipe CONFIG.json
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/error.h"
#include "train/trainer.h"

namespace {

bool read_exact(std::FILE* in, uint8_t* dst, size_t n) {
  return std::fread(dst, 1, n, in) == n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: kaio-train-pipe CONFIG.json\n");
    return 2;
  }
  try {
    spdlog::set_level(spdlog::level::warn);
    const kaio::Config config = kaio::load_config(argv[1]);
    const int batch_size = config.train.batch_size;
    auto trainer = kaio::train::Trainer::create(config.train, config.decode.frames, config.decode.size);
    const size_t window_bytes = static_cast<size_t>(config.decode.frames) * config.decode.size * config.decode.size * 3;
    std::vector<uint8_t> batch(window_bytes * static_cast<size_t>(batch_size));
    std::printf("{\"checkpoint_bytes\": %llu}\n", static_cast<unsigned long long>(trainer->checkpoint_bytes()));
    std::fflush(stdout);
    int pending = 0;
    int64_t samples = 0;
    double train_seconds = 0, loss = 0;
    auto step = [&] {
      const auto start = std::chrono::steady_clock::now();
      loss = trainer->step(batch.data(), pending).loss;
      train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      samples += pending;
      pending = 0;
    };
    std::FILE* in = stdin;
    for (int tag; (tag = std::fgetc(in)) != EOF;) {
      if (tag == 'W') {
        if (!read_exact(in, batch.data() + window_bytes * static_cast<size_t>(pending), window_bytes)) {
          std::fprintf(stderr, "kaio-train-pipe: stdin ended inside a window (%zu bytes expected)\n", window_bytes);
          return 1;
        }
        if (++pending == batch_size) step();
      } else if (tag == 'C') {
        std::string path;
        for (int c; (c = std::fgetc(in)) != EOF && c != '\n';) path.push_back(static_cast<char>(c));
        trainer->save_checkpoint(path, "");
        std::fputs("ok\n", stdout);
        std::fflush(stdout);
      } else {
        std::fprintf(stderr, "kaio-train-pipe: unknown record tag %d\n", tag);
        return 1;
      }
    }
    if (pending > 0) step();
    std::printf("{\"steps\": %lld, \"samples\": %lld, \"train_seconds\": %.4f, \"loss\": %.6f}\n",
                static_cast<long long>(trainer->steps_done()), static_cast<long long>(samples), train_seconds, loss);
    return 0;
  } catch (const kaio::Error& e) {
    std::fprintf(stderr, "kaio-train-pipe: %s\n", e.what());
    return 1;
  }
}
