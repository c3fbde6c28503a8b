#include "train/layers/masked_mse.h"

#include <cmath>

namespace kaio::train::cpu {

double masked_mse_forward_backward(float* dpred, const float* pred, const float* patches, const uint8_t* mask, int rows,
                                   int patch_dim) {
  long masked = 0;
  for (int r = 0; r < rows; ++r) masked += mask[r] ? 1 : 0;
  const float grad_scale = masked ? 2.0f / (static_cast<float>(masked) * patch_dim) : 0.0f;
  double total = 0.0;
#pragma omp parallel for reduction(+ : total)
  for (int r = 0; r < rows; ++r) {
    const long at = static_cast<long>(r) * patch_dim;
    float* g = dpred + at;
    if (!mask[r]) {
      for (int i = 0; i < patch_dim; ++i) g[i] = 0.0f;
      continue;
    }
    const float* t = patches + at;
    double sum = 0.0;
    for (int i = 0; i < patch_dim; ++i) sum += t[i];
    const float mean = static_cast<float>(sum / patch_dim);
    double var = 0.0;
    for (int i = 0; i < patch_dim; ++i) var += double(t[i] - mean) * double(t[i] - mean);
    const float inv_std = 1.0f / std::sqrt(static_cast<float>(var / patch_dim) + kTargetNormEps);
    for (int i = 0; i < patch_dim; ++i) {
      const float diff = pred[at + i] - (t[i] - mean) * inv_std;
      total += double(diff) * diff;
      g[i] = grad_scale * diff;
    }
  }
  return masked ? total / (static_cast<double>(masked) * patch_dim) : 0.0;
}

}  // namespace kaio::train::cpu
