// AdamW update (torch.optim.AdamW arithmetic), one thread per parameter.
#include <math.h>

#include "kernels.h"

namespace kaio_gpu {
namespace {

__global__ void adamw_kernel(float* p, const float* grad, float* m, float* v, size_t n, float lr, float beta1,
                             float beta2, float eps, float wd, float grad_scale, float bc1, float bc2_sqrt) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = grad[i] * grad_scale;
  m[i] = beta1 * m[i] + (1.0f - beta1) * g;
  v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
  const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
  p[i] = p[i] * (1.0f - lr * wd) - (lr / bc1) * m[i] / denom;
}

}  // namespace
}  // namespace kaio_gpu

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(adamw)(float* p, const float* grad, float* m, float* v, size_t n, float lr, float beta1,
                                  float beta2, float eps, float wd, float grad_scale, float bc1, float bc2_sqrt) {
  adamw_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(p, grad, m, v, n, lr, beta1, beta2, eps, wd,
                                                                 grad_scale, bc1, bc2_sqrt);
  return check_launch("adamw");
}
