#pragma once
// Block-wide sums for the kernels (device code only, no runtime calls), a
// header of its own so tests/train/host_shim.h can run the kernels that use
// them on the host. warpSize and gpuShflDown come from vendor.h on the device.
#include <stddef.h>

namespace kaio_gpu {

// The sum of x[0..n) in double by one block of kSumThreads threads, returned
// to thread 0: the device-side end of a reduction the host used to finish.
constexpr unsigned kSumThreads = 256;
__device__ inline double block_sum_double(const float* x, size_t n) {
  __shared__ double partial[kSumThreads];
  double acc = 0.0;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  return partial[0];
}

// Sum over the block, returned to every thread. Works for any warpSize (32 on
// NVIDIA, 64 on CDNA) and blockDim.x up to 1024.
__device__ inline float block_sum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  for (int offset = warpSize / 2; offset > 0; offset >>= 1) v += gpuShflDown(v, offset);
  const int lane = threadIdx.x % warpSize, warp = threadIdx.x / warpSize;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = (blockDim.x + warpSize - 1) / warpSize;
    v = lane < warps ? partial[lane] : 0.0f;
    for (int offset = warpSize / 2; offset > 0; offset >>= 1) v += gpuShflDown(v, offset);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

}  // namespace kaio_gpu
