// GELU (tanh approximation) and the residual add: elementwise.
#include <math.h>

#include "kernels.h"

namespace kaio_gpu {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f, kCubic = 0.044715f;

__global__ void gelu_forward_kernel(float* out, const float* in, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = in[i];
  out[i] = 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + kCubic * x * x * x)));
}

__global__ void gelu_backward_kernel(float* din, const float* dout, const float* in, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = in[i];
  const float t = tanhf(kSqrt2OverPi * (x + kCubic * x * x * x));
  const float dt = (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
  din[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * x * dt);
}

__global__ void add_kernel(float* out, const float* a, const float* b, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = a[i] + b[i];
}

}  // namespace
}  // namespace kaio_gpu

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(gelu_forward)(float* out, const float* in, size_t n) {
  gelu_forward_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(out, in, n);
  return check_launch("gelu_forward");
}
extern "C" int KAIO_GPU_FN(gelu_backward)(float* din, const float* dout, const float* in, size_t n) {
  gelu_backward_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(din, dout, in, n);
  return check_launch("gelu_backward");
}
extern "C" int KAIO_GPU_FN(add)(float* out, const float* a, const float* b, size_t n) {
  add_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(out, a, b, n);
  return check_launch("add");
}
