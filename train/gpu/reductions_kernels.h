#pragma once
// Sum of squares in per-block partial sums (kBlocks blocks of kThreads), and
// the step's gradient figures from them.
// Device code only: reductions.cu launches it, and tests/train/ops_host_test.cpp
// runs it on the host (tests/train/host_shim.h).
#include <math.h>
#include <stddef.h>

#include "block_reduce.h"
#include "gpu_api.h"

namespace kaio_gpu {
namespace {

constexpr unsigned kBlocks = 256, kThreads = 256;

__global__ void sum_squares_kernel(float* partial, const float* x, size_t n) {
  float acc = 0.0f;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    acc += x[i] * x[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void grad_figures_kernel(KaioStepFigures* figures, const float* partial, double max_norm) {
  const double norm = sqrt(block_sum_double(partial, kBlocks));
  if (threadIdx.x != 0) return;
  figures->grad_norm = norm;
  figures->clip = (float)(max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0);
  figures->finite = isfinite(figures->loss) && isfinite(norm) ? 1 : 0;
}

}  // namespace
}  // namespace kaio_gpu
