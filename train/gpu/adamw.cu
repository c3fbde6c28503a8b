// AdamW update (torch.optim.AdamW arithmetic), one thread per parameter; the
// gradient's scale comes from the host (adamw) or from the step's figures in
// device memory (adamw_figures, skipped when the step is not finite).
#include <math.h>

#include "kernels.h"

// After kernels.h, which names the namespace per vendor.
#include "adamw_kernels.h"

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
