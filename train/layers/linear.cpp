#include "train/layers/linear.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

namespace kaio::train::cpu {
namespace {

// Runs f(begin, end) on one slice of [0, n) per OpenMP thread. OpenBLAS runs
// single-threaded inside (cpu_backend.cpp), so only one thread pool exists and
// no two runtimes spin against each other on the same cores.
template <typename F>
void split_rows(int n, F f) {
#pragma omp parallel
  {
    const int threads = omp_get_num_threads(), id = omp_get_thread_num();
    const int chunk = (n + threads - 1) / threads, begin = std::min(n, id * chunk), end = std::min(n, begin + chunk);
    if (begin < end) f(begin, end);
  }
}

}  // namespace

void linear_forward(float* out, const float* in, const float* weight, const float* bias, int rows, int in_dim,
                    int out_dim) {
  float beta = 0.0f;
  if (bias) {
#pragma omp parallel for
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out_dim; ++o) out[static_cast<long>(r) * out_dim + o] = bias[o];
    beta = 1.0f;
  }
  split_rows(rows, [&](int r0, int r1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, out_dim, in_dim, 1.0f, in + long(r0) * in_dim, in_dim,
                weight, in_dim, beta, out + long(r0) * out_dim, out_dim);
  });
}

void linear_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in, const float* weight,
                     int rows, int in_dim, int out_dim) {
  if (din)
    split_rows(rows, [&](int r0, int r1) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, in_dim, out_dim, 1.0f, dout + long(r0) * out_dim,
                  out_dim, weight, in_dim, 0.0f, din + long(r0) * in_dim, in_dim);
    });
  // Each thread owns a band of dweight's rows (output features).
  split_rows(out_dim, [&](int o0, int o1) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o1 - o0, in_dim, rows, 1.0f, dout + o0, out_dim, in, in_dim,
                1.0f, dweight + long(o0) * in_dim, in_dim);
  });
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
