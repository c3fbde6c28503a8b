#include "train/layers/gelu.h"

#include <cmath>

namespace kaio::train::cpu {
namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
}  // namespace

void gelu_forward(float* out, const float* in, size_t n) {
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) {
    const float x = in[i];
    out[i] = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + kCubic * x * x * x)));
  }
}

void gelu_backward(float* din, const float* dout, const float* in, size_t n) {
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) {
    const float x = in[i];
    const float t = std::tanh(kSqrt2OverPi * (x + kCubic * x * x * x));
    const float dt = (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    din[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * x * dt);
  }
}

}  // namespace kaio::train::cpu
