// GELU (tanh approximation) and the residual add: elementwise.
#include <math.h>

#include "kernels.h"

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

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(gelu_forward)(void* out, const void* in, size_t n, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    gelu_forward_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(as<T>(out), as<T>(in), n);
    return check_launch("gelu_forward");
  });
}
extern "C" int KAIO_GPU_FN(gelu_backward)(void* din, const void* dout, const void* in, size_t n, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    gelu_backward_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(as<T>(din), as<T>(dout), as<T>(in), n);
    return check_launch("gelu_backward");
  });
}
extern "C" int KAIO_GPU_FN(add)(void* out, const void* a, const void* b, size_t n, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    add_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(as<T>(out), as<T>(a), as<T>(b), n);
    return check_launch("add");
  });
}
