#pragma once
// LayerNorm over the last dimension, per element type: one block per row
// forward and for the input gradient, one thread per column for the
// parameter gradients.
// Device code only: layernorm.cu launches it, and tests/train/ops_host_test.cpp
// runs it on the host (tests/train/host_shim.h).
#include <math.h>

#include "block_reduce.h"
#include "element.h"

namespace kaio_gpu {
namespace {

constexpr float kEps = 1e-5f;

template <typename T>
__global__ void layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* in, const float* w, const float* b,
                                         int dim) {
  const T* x = in + (long)blockIdx.x * dim;
  T* y = out + (long)blockIdx.x * dim;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += to_float(x[i]);
  const float m = block_sum(sum) / dim;
  float var = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) var += (to_float(x[i]) - m) * (to_float(x[i]) - m);
  const float s = rsqrtf(block_sum(var) / dim + kEps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) y[i] = from_float<T>((to_float(x[i]) - m) * s * w[i] + b[i]);
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = m;
    rstd[blockIdx.x] = s;
  }
}

template <typename T>
__global__ void layernorm_input_grad_kernel(T* din, const T* dout, const T* in, const float* w, const float* mean,
                                            const float* rstd, int dim) {
  const long at = (long)blockIdx.x * dim;
  const float m = mean[blockIdx.x], s = rstd[blockIdx.x];
  float a = 0.0f, c = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float dxhat = to_float(dout[at + i]) * w[i];
    a += dxhat;
    c += dxhat * (to_float(in[at + i]) - m) * s;
  }
  a = block_sum(a) / dim;
  c = block_sum(c) / dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float g = s * (to_float(dout[at + i]) * w[i] - a - (to_float(in[at + i]) - m) * s * c);
    din[at + i] = from_float<T>(to_float(din[at + i]) + g);
  }
}

template <typename T>
__global__ void layernorm_param_grad_kernel(float* dw, float* db, const T* dout, const T* in, const float* mean,
                                            const float* rstd, int rows, int dim) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= dim) return;
  float gw = 0.0f, gb = 0.0f;
  for (int r = 0; r < rows; ++r) {
    const float dy = to_float(dout[(long)r * dim + i]);
    gw += dy * (to_float(in[(long)r * dim + i]) - mean[r]) * rstd[r];
    gb += dy;
  }
  dw[i] += gw;
  db[i] += gb;
}

}  // namespace
}  // namespace kaio_gpu
