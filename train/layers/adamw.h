#pragma once
// AdamW as torch.optim.AdamW computes it: decoupled weight decay
// p *= 1 - lr*wd, then the bias-corrected Adam update. grad_scale applies the
// gradient-norm clip without rewriting the gradients.
#include <cstddef>
#include <cstdint>

namespace kaio::train {

struct AdamWStep {
  float lr;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;  // 0 for biases, LayerNorm, positional embedding and mask token
  float grad_scale;
  int64_t step;  // 1-based, for the bias corrections
};

namespace cpu {
void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, const AdamWStep& s);
}  // namespace cpu

}  // namespace kaio::train
