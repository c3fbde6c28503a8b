#include "train/layers/layernorm.h"

#include <cmath>
#include <vector>

namespace kaio::train::cpu {

void layernorm_forward(float* out, float* mean, float* rstd, const float* in, const float* weight, const float* bias,
                       int rows, int dim) {
#pragma omp parallel for
  for (int r = 0; r < rows; ++r) {
    const float* x = in + static_cast<long>(r) * dim;
    float* y = out + static_cast<long>(r) * dim;
    double sum = 0.0;
    for (int i = 0; i < dim; ++i) sum += x[i];
    const float m = static_cast<float>(sum / dim);
    double var = 0.0;
    for (int i = 0; i < dim; ++i) var += double(x[i] - m) * double(x[i] - m);
    const float s = 1.0f / std::sqrt(static_cast<float>(var / dim) + kLayerNormEps);
    for (int i = 0; i < dim; ++i) y[i] = (x[i] - m) * s * weight[i] + bias[i];
    mean[r] = m;
    rstd[r] = s;
  }
}

void layernorm_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in,
                        const float* weight, const float* mean, const float* rstd, int rows, int dim) {
#pragma omp parallel
  {
    // Per-thread partial sums of the parameter gradients, merged once at the end.
    std::vector<double> dw(dim, 0.0), db(dim, 0.0);
#pragma omp for
    for (int r = 0; r < rows; ++r) {
      const float* x = in + static_cast<long>(r) * dim;
      const float* dy = dout + static_cast<long>(r) * dim;
      float* dx = din + static_cast<long>(r) * dim;
      double mean_dxhat = 0.0, mean_dxhat_xhat = 0.0;
      for (int i = 0; i < dim; ++i) {
        const float xhat = (x[i] - mean[r]) * rstd[r];
        const float dxhat = dy[i] * weight[i];
        mean_dxhat += dxhat;
        mean_dxhat_xhat += double(dxhat) * xhat;
        dw[i] += double(dy[i]) * xhat;
        db[i] += dy[i];
      }
      const float a = static_cast<float>(mean_dxhat / dim);
      const float b = static_cast<float>(mean_dxhat_xhat / dim);
      for (int i = 0; i < dim; ++i) {
        const float xhat = (x[i] - mean[r]) * rstd[r];
        dx[i] += rstd[r] * (dy[i] * weight[i] - a - xhat * b);
      }
    }
#pragma omp critical
    for (int i = 0; i < dim; ++i) {
      dweight[i] += static_cast<float>(dw[i]);
      dbias[i] += static_cast<float>(db[i]);
    }
  }
}

}  // namespace kaio::train::cpu
