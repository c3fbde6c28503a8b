#pragma once
// Runs the kernels' device code (train/gpu/*.h) on the host: every GPU thread
// of a block is a std::thread, __syncthreads a barrier, __shared__ arrays
// static (blocks run one at a time). Include it before a kernel header. It
// checks arithmetic and index bounds where no GPU is present; it cannot see
// what only a GPU does (warp scheduling, memory limits).
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace host_shim {
struct Dim {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local Dim threadIdx, blockIdx;
inline Dim blockDim, gridDim;
inline std::barrier<>* block_barrier = nullptr;
constexpr unsigned kWarp = 32;
// gpuShflDown's exchange: one slot per thread of the block, one barrier per warp.
inline std::vector<float> shuffle_slots;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;

// Runs `kernel` for every block of `grid`, each with `block` host threads.
inline void launch(Dim grid, Dim block, const std::function<void()>& kernel) {
  blockDim = block;
  gridDim = grid;
  const unsigned threads = block.x * block.y * block.z;
  shuffle_slots.assign(threads, 0.0f);
  warp_barriers.clear();
  for (unsigned first = 0; first < threads; first += kWarp)
    warp_barriers.push_back(std::make_unique<std::barrier<>>(std::min(kWarp, threads - first)));
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> barrier(threads);
        block_barrier = &barrier;
        std::vector<std::thread> team;
        for (unsigned t = 0; t < threads; ++t)
          team.emplace_back([&, t] {
            threadIdx = {t % block.x, t / block.x % block.y, t / (block.x * block.y)};
            blockIdx = {bx, by, bz};
            kernel();
          });
        for (auto& thread : team) thread.join();
      }
}
}  // namespace host_shim

using host_shim::blockDim;
using host_shim::blockIdx;
using host_shim::gridDim;
using host_shim::threadIdx;
using std::min;
constexpr int warpSize = host_shim::kWarp;
inline void __syncthreads() {  // NOLINT(bugprone-reserved-identifier)
  host_shim::block_barrier->arrive_and_wait();
}
#define __global__           // NOLINT(bugprone-reserved-identifier)
#define __device__           // NOLINT(bugprone-reserved-identifier)
#define __shared__ static    // NOLINT(bugprone-reserved-identifier)
#define __constant__ static  // NOLINT(bugprone-reserved-identifier)

// A warp's shuffle (vendor.h's gpuShflDown): the lane `offset` above, or the
// caller's own value past the warp's end; every lane of the warp calls it.
inline float gpuShflDown(float v, int offset) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned lane = t % host_shim::kWarp, warp = t / host_shim::kWarp;
  host_shim::shuffle_slots[t] = v;
  host_shim::warp_barriers[warp]->arrive_and_wait();
  const unsigned from = t + static_cast<unsigned>(offset);
  const float got = lane + static_cast<unsigned>(offset) < host_shim::kWarp && from < host_shim::shuffle_slots.size()
                        ? host_shim::shuffle_slots[from]
                        : v;
  host_shim::warp_barriers[warp]->arrive_and_wait();
  return got;
}
inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}

// The device's bit casts.
inline float __uint_as_float(unsigned u) {  // NOLINT(bugprone-reserved-identifier)
  float x = 0;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
inline unsigned __float_as_uint(float x) {  // NOLINT(bugprone-reserved-identifier)
  unsigned u = 0;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
