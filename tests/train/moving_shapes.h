#pragma once
// Learnable synthetic windows for the trainer tests: masked tubelets are
// predictable from the visible ones.
#include <cstdint>
#include <random>
#include <vector>

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

}  // namespace kaio::train::test
