#include "train/layers/attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

namespace kaio::train::cpu {
namespace {

// Serial: attention parallelises over (sample, head) around these.
void softmax_rows(float* p, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    float* row = p + static_cast<long>(r) * cols;
    const float top = *std::max_element(row, row + cols);
    double sum = 0.0;
    for (int c = 0; c < cols; ++c) {
      row[c] = std::exp(row[c] - top);
      sum += row[c];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int c = 0; c < cols; ++c) row[c] *= inv;
  }
}

// dS = P * (dP - rowsum(dP * P)), in place in dp.
void softmax_backward_rows(float* dp, const float* p, int rows, int cols) {
  for (int r = 0; r < rows; ++r) {
    float* d = dp + static_cast<long>(r) * cols;
    const float* y = p + static_cast<long>(r) * cols;
    double dot = 0.0;
    for (int c = 0; c < cols; ++c) dot += double(d[c]) * y[c];
    const float fdot = static_cast<float>(dot);
    for (int c = 0; c < cols; ++c) d[c] = y[c] * (d[c] - fdot);
  }
}

}  // namespace

void attention_forward(float* out, float* probs, const float* qkv, const AttentionShape& s) {
  const int n = s.tokens, hd = s.head_dim, d = s.dim(), ld = 3 * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
#pragma omp parallel for
  for (int bh = 0; bh < s.batch * s.heads; ++bh) {
    const int b = bh / s.heads, h = bh % s.heads;
    {
      const float* q = qkv + static_cast<long>(b) * n * ld + h * hd;
      const float* k = q + d;
      const float* v = q + 2 * d;
      float* p = probs + (static_cast<long>(b) * s.heads + h) * n * n;
      float* o = out + static_cast<long>(b) * n * d + h * hd;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, scale, q, ld, k, ld, 0.0f, p, n);
      softmax_rows(p, n, n);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, n, 1.0f, p, n, v, ld, 0.0f, o, d);
    }
  }
}

void attention_backward(float* dqkv, float* dprobs, const float* dout, const float* qkv, const float* probs,
                        const AttentionShape& s) {
  const int n = s.tokens, hd = s.head_dim, d = s.dim(), ld = 3 * d;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
#pragma omp parallel for
  for (int bh = 0; bh < s.batch * s.heads; ++bh) {
    const int b = bh / s.heads, h = bh % s.heads;
    {
      const long qkv_at = static_cast<long>(b) * n * ld + h * hd;
      const float* q = qkv + qkv_at;
      const float* k = q + d;
      const float* v = q + 2 * d;
      float* dq = dqkv + qkv_at;
      float* dk = dq + d;
      float* dv = dq + 2 * d;
      const long p_at = (static_cast<long>(b) * s.heads + h) * n * n;
      const float* p = probs + p_at;
      float* dp = dprobs + p_at;
      const float* dout_bh = dout + static_cast<long>(b) * n * d + h * hd;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, 1.0f, dout_bh, d, v, ld, 0.0f, dp, n);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, 1.0f, p, n, dout_bh, d, 0.0f, dv, ld);
      softmax_backward_rows(dp, p, n, n);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, n, scale, dp, n, k, ld, 0.0f, dq, ld);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, scale, dp, n, q, ld, 0.0f, dk, ld);
    }
  }
}

}  // namespace kaio::train::cpu
