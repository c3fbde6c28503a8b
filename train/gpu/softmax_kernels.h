#pragma once
// The naive attention path's row softmax and its backward over the
// [batch, heads, tokens, tokens] probabilities (fp32 on every path).
// Device code only: attention.cu launches it, and tests/train/ops_host_test.cpp
// runs it on the host (tests/train/host_shim.h).
#include <math.h>

#include "block_reduce.h"
#include "element.h"

namespace kaio_gpu {
namespace {

__global__ void softmax_rows_kernel(float* p, int cols) {
  float* row = p + (long)blockIdx.x * cols;
  float top = -INFINITY;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) top = fmaxf(top, row[c]);
  // Tree max in shared memory (blockDim.x is a power of two, at most 256).
  __shared__ float tops[256];
  tops[threadIdx.x] = top;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if ((int)threadIdx.x < stride) tops[threadIdx.x] = fmaxf(tops[threadIdx.x], tops[threadIdx.x + stride]);
    __syncthreads();
  }
  top = tops[0];
  float sum = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float e = expf(row[c] - top);
    row[c] = e;
    sum += e;
  }
  const float inv = 1.0f / block_sum(sum);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) row[c] *= inv;
}

__global__ void softmax_backward_rows_kernel(float* dp, const float* p, int cols) {
  float* d = dp + (long)blockIdx.x * cols;
  const float* y = p + (long)blockIdx.x * cols;
  float dot = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dot += d[c] * y[c];
  dot = block_sum(dot);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) d[c] = y[c] * (d[c] - dot);
}

}  // namespace
}  // namespace kaio_gpu
