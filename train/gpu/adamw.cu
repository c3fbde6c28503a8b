// AdamW update (torch.optim.AdamW arithmetic), one thread per parameter; the
// gradient's scale comes from the host (adamw) or from the step's figures in
// device memory (adamw_figures, skipped when the step is not finite).
#include <math.h>

#include "kernels.h"

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

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(adamw)(float* p, const float* grad, float* m, float* v, size_t n, float lr, float beta1,
                                  float beta2, float eps, float wd, float grad_scale, float bc1, float bc2_sqrt) {
  const AdamWArgs a{lr, beta1, beta2, eps, wd, bc1, bc2_sqrt};
  adamw_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(p, grad, m, v, n, a, grad_scale);
  return check_launch("adamw");
}

extern "C" int KAIO_GPU_FN(adamw_figures)(float* p, const float* grad, float* m, float* v, size_t n, float lr,
                                          float beta1, float beta2, float eps, float wd, const KaioStepFigures* figures,
                                          float bc1, float bc2_sqrt) {
  const AdamWArgs a{lr, beta1, beta2, eps, wd, bc1, bc2_sqrt};
  adamw_figures_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(p, grad, m, v, n, a, figures);
  return check_launch("adamw_figures");
}
