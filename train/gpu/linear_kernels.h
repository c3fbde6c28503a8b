#pragma once
// The linear layer around gemm(): the bias broadcast into the output before
// the product adds to it, and the bias gradient as column sums.
// Device code only: gemm.cu launches it, and tests/train/ops_host_test.cpp
// runs it on the host (tests/train/host_shim.h).
#include "element.h"

namespace kaio_gpu {
namespace {

template <typename T>
__global__ void broadcast_bias_kernel(T* out, const float* bias, int rows, int cols) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (long)rows * cols) out[i] = from_float<T>(bias[i % cols]);
}

template <typename T>
__global__ void column_sum_kernel(float* sums, const T* x, int rows, int cols) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  float acc = 0.0f;
  for (int r = 0; r < rows; ++r) acc += to_float(x[(long)r * cols + col]);
  sums[col] += acc;
}

}  // namespace
}  // namespace kaio_gpu
