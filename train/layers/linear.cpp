#include "train/layers/linear.h"

#include <cblas.h>

namespace kaio::train::cpu {

void linear_forward(float* out, const float* in, const float* weight, const float* bias, int rows,
                    int in_dim, int out_dim) {
  float beta = 0.0f;
  if (bias) {
#pragma omp parallel for
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out_dim; ++o) out[static_cast<long>(r) * out_dim + o] = bias[o];
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_dim, in_dim, 1.0f, in, in_dim,
              weight, in_dim, beta, out, out_dim);
}

void linear_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in,
                     const float* weight, int rows, int in_dim, int out_dim) {
  if (din)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in_dim, out_dim, 1.0f, dout,
                out_dim, weight, in_dim, 0.0f, din, in_dim);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out_dim, in_dim, rows, 1.0f, dout, out_dim,
              in, in_dim, 1.0f, dweight, in_dim);
  if (dbias) {
#pragma omp parallel for
    for (int o = 0; o < out_dim; ++o) {
      double sum = 0.0;
      for (int r = 0; r < rows; ++r) sum += dout[static_cast<long>(r) * out_dim + o];
      dbias[o] += static_cast<float>(sum);
    }
  }
}

}  // namespace kaio::train::cpu
