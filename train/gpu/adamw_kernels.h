#pragma once
// AdamW (torch.optim.AdamW arithmetic), one thread per parameter: the
// gradient scaled by the host's factor, or by the step's figures' clip and
// only when they are finite.
// Device code only: adamw.cu launches it, and tests/train/ops_host_test.cpp
// runs it on the host (tests/train/host_shim.h).
#include <math.h>
#include <stddef.h>

#include "gpu_api.h"

namespace kaio_gpu {
namespace {

struct AdamWArgs {
  float lr, beta1, beta2, eps, wd, bc1, bc2_sqrt;
};

__device__ inline void adamw_update(size_t i, float* p, const float* grad, float* m, float* v, const AdamWArgs& a,
                                    float grad_scale) {
  const float g = grad[i] * grad_scale;
  m[i] = a.beta1 * m[i] + (1.0f - a.beta1) * g;
  v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * g * g;
  const float denom = sqrtf(v[i]) / a.bc2_sqrt + a.eps;
  p[i] = p[i] * (1.0f - a.lr * a.wd) - (a.lr / a.bc1) * m[i] / denom;
}

__global__ void adamw_kernel(float* p, const float* grad, float* m, float* v, size_t n, AdamWArgs a, float grad_scale) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) adamw_update(i, p, grad, m, v, a, grad_scale);
}

__global__ void adamw_figures_kernel(float* p, const float* grad, float* m, float* v, size_t n, AdamWArgs a,
                                     const KaioStepFigures* figures) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && figures->finite) adamw_update(i, p, grad, m, v, a, figures->clip);
}

}  // namespace
}  // namespace kaio_gpu
