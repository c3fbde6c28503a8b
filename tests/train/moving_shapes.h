#pragma once
// Learnable synthetic windows for the trainer tests: masked tubelets are
// predictable from the visible ones.
#include <cstdint>
#include <random>
#include <vector>

#include "train/trainer.h"

namespace kaio::train::test {

// Windows of bright squares moving at a constant velocity over a smooth
// background, so masked tubelets are predictable from visible ones.
inline std::vector<uint8_t> moving_shapes(int batch, int frames, int size, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pos(0, size - 1), vel(-2, 2), col(64, 255);
  std::vector<uint8_t> out(static_cast<size_t>(batch) * frames * size * size * 3);
  for (int b = 0; b < batch; ++b) {
    const int x0 = pos(rng), y0 = pos(rng), vx = vel(rng), vy = vel(rng), side = size / 4;
    const int r = col(rng), g = col(rng), bl = col(rng);
    for (int t = 0; t < frames; ++t)
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x) {
          uint8_t* px = &out[((((static_cast<size_t>(b) * frames + t) * size + y) * size) + x) * 3];
          const int sx = ((x - x0 - vx * t) % size + size) % size, sy = ((y - y0 - vy * t) % size + size) % size;
          const bool inside = sx < side && sy < side;
          px[0] = inside ? r : static_cast<uint8_t>(4 * x);
          px[1] = inside ? g : static_cast<uint8_t>(4 * y);
          px[2] = inside ? bl : 40;
        }
  }
  return out;
}

// The mean masked loss of the first and of the last 20 of 300 steps of a
// trainer on moving shapes (8x32x32 windows, batch 4, 20 warm-up steps): the
// curve the trainer tests compare across backends.
struct LossCurve {
  double first = 0, last = 0;
};
inline LossCurve learn_moving_shapes(kaio::TrainConfig config) {
  config.batch_size = 4;
  config.warmup_steps = 20;
  config.mask_ratio = 0.75;
  auto trainer = Trainer::create(config, 8, 32);
  LossCurve curve;
  const int steps = 300;
  for (int s = 0; s < steps; ++s) {
    const auto windows = moving_shapes(4, 8, 32, 1000 + s);
    const double loss = trainer->step(windows.data(), 4).loss;
    if (s < 20) curve.first += loss / 20;
    if (s >= steps - 20) curve.last += loss / 20;
  }
  return curve;
}

}  // namespace kaio::train::test
