// Tiled GEMM (shared-memory 16x16 tiles, fp32 accumulation; bf16 rounds the
// operands), and the linear layer on top of it.
#include "kernels.h"

namespace kaio_gpu {
namespace {

constexpr int kTile = 16;

__global__ void gemm_kernel(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                            const float* b, int ldb, float beta, float* c, int ldc, GemmBatch batch, bool bf16) {
  __shared__ float as[kTile][kTile + 1];
  __shared__ float bs[kTile][kTile + 1];
  const int z = blockIdx.z;
  a += (z / batch.inner) * batch.a_outer + (z % batch.inner) * batch.a_inner;
  b += (z / batch.inner) * batch.b_outer + (z % batch.inner) * batch.b_inner;
  c += (z / batch.inner) * batch.c_outer + (z % batch.inner) * batch.c_inner;
  const int row = blockIdx.y * kTile + threadIdx.y, col = blockIdx.x * kTile + threadIdx.x;
  float acc = 0.0f;
  for (int t = 0; t < k; t += kTile) {
    const int ka = t + threadIdx.x, kb = t + threadIdx.y;
    float av = 0.0f, bv = 0.0f;
    if (row < m && ka < k) av = trans_a ? a[(long)ka * lda + row] : a[(long)row * lda + ka];
    if (col < n && kb < k) bv = trans_b ? b[(long)col * ldb + kb] : b[(long)kb * ldb + col];
    as[threadIdx.y][threadIdx.x] = bf16 ? round_bf16(av) : av;
    bs[threadIdx.y][threadIdx.x] = bf16 ? round_bf16(bv) : bv;
    __syncthreads();
    for (int i = 0; i < kTile; ++i) acc += as[threadIdx.y][i] * bs[i][threadIdx.x];
    __syncthreads();
  }
  if (row < m && col < n) {
    float* out = c + (long)row * ldc + col;
    *out = alpha * acc + (beta != 0.0f ? beta * *out : 0.0f);
  }
}

__global__ void broadcast_bias_kernel(float* out, const float* bias, int rows, int cols) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (long)rows * cols) out[i] = bias[i % cols];
}

__global__ void column_sum_kernel(float* sums, const float* x, int rows, int cols) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  float acc = 0.0f;
  for (int r = 0; r < rows; ++r) acc += x[(long)r * cols + col];
  sums[col] += acc;
}

}  // namespace

int gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
         float beta, float* c, int ldc, const GemmBatch& batch, bool bf16) {
  const dim3 block(kTile, kTile), grid((n + kTile - 1) / kTile, (m + kTile - 1) / kTile, batch.count);
  gemm_kernel<<<grid, block, 0, compute_stream()>>>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                                                    batch, bf16);
  return check_launch("gemm");
}

}  // namespace kaio_gpu

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(linear_forward)(float* out, const float* in, const float* weight, const float* bias,
                                           int rows, int in_dim, int out_dim, int bf16) {
  float beta = 0.0f;
  if (bias) {
    const size_t n = (size_t)rows * out_dim;
    broadcast_bias_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(out, bias, rows, out_dim);
    beta = 1.0f;
  }
  return gemm(false, true, rows, out_dim, in_dim, 1.0f, in, in_dim, weight, in_dim, beta, out, out_dim, {}, bf16);
}

extern "C" int KAIO_GPU_FN(linear_backward)(float* din, float* dweight, float* dbias, const float* dout,
                                            const float* in, const float* weight, int rows, int in_dim, int out_dim,
                                            int bf16) {
  if (din &&
      gemm(false, false, rows, in_dim, out_dim, 1.0f, dout, out_dim, weight, in_dim, 0.0f, din, in_dim, {}, bf16))
    return -1;
  if (gemm(true, false, out_dim, in_dim, rows, 1.0f, dout, out_dim, in, in_dim, 1.0f, dweight, in_dim, {}, bf16))
    return -1;
  if (dbias) column_sum_kernel<<<blocks_for(out_dim, 256), 256, 0, compute_stream()>>>(dbias, dout, rows, out_dim);
  return check_launch("linear_backward");
}
