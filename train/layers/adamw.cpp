#include "train/layers/adamw.h"

#include <cmath>

namespace kaio::train::cpu {

void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, const AdamWStep& s) {
  const double bc1 = 1.0 - std::pow(double(s.beta1), double(s.step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(double(s.beta2), double(s.step)));
  const float step_size = static_cast<float>(s.lr / bc1);
  const float decay = 1.0f - s.lr * s.weight_decay;
#pragma omp parallel for
  for (size_t i = 0; i < n; ++i) {
    const float g = grad[i] * s.grad_scale;
    m[i] = s.beta1 * m[i] + (1.0f - s.beta1) * g;
    v[i] = s.beta2 * v[i] + (1.0f - s.beta2) * g * g;
    const float denom = std::sqrt(v[i]) / static_cast<float>(bc2_sqrt) + s.eps;
    param[i] = param[i] * decay - step_size * m[i] / denom;
  }
}

}  // namespace kaio::train::cpu
