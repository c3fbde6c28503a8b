#pragma once
// GELU (tanh approximation) and the residual add, per element type.
// Device code only: gelu.cu launches it, and tests/train/ops_host_test.cpp
// runs it on the host (tests/train/host_shim.h).
#include <math.h>

#include "element.h"

namespace kaio_gpu {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f, kCubic = 0.044715f;

template <typename T>
__global__ void gelu_forward_kernel(T* out, const T* in, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = to_float(in[i]);
  out[i] = from_float<T>(0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + kCubic * x * x * x))));
}

template <typename T>
__global__ void gelu_backward_kernel(T* din, const T* dout, const T* in, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = to_float(in[i]);
  const float t = tanhf(kSqrt2OverPi * (x + kCubic * x * x * x));
  const float dt = (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
  din[i] = from_float<T>(to_float(dout[i]) * (0.5f * (1.0f + t) + 0.5f * x * dt));
}

template <typename T>
__global__ void add_kernel(T* out, const T* a, const T* b, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

}  // namespace
}  // namespace kaio_gpu
