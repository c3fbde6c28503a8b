#pragma once
// The tiled GEMM kernel's device code: gemm() runs it where the build has no
// vendor BLAS (Debian's hipcc 5.2). A header of its own, like
// fused_attention.h, so tests/train/tiled_gemm_host_test.cpp runs it on the
// host.
#include "element.h"

namespace kaio_gpu {

// Batch z of a GEMM starts at (z / inner) * outer + (z % inner) * inner_stride
// in each matrix: one launch covers every (sample, head) of attention.
struct GemmBatch {
  int count = 1, inner = 1;
  long a_outer = 0, a_inner = 0, b_outer = 0, b_inner = 0, c_outer = 0, c_inner = 0;
};

inline GemmBatch gemm_batch(int count, int inner, long a_outer, long a_inner, long b_outer, long b_inner, long c_outer,
                            long c_inner) {
  GemmBatch g;
  g.count = count;
  g.inner = inner;
  g.a_outer = a_outer, g.a_inner = a_inner, g.b_outer = b_outer, g.b_inner = b_inner;
  g.c_outer = c_outer, g.c_inner = c_inner;
  return g;
}

constexpr int kTile = 16;

// One 16x16 block per 16x16 tile of C, one thread per element; z is the batch.
template <typename A, typename B, typename C>
__global__ void tiled_gemm_kernel(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const A* a, int lda,
                                  const B* b, int ldb, float beta, C* c, int ldc, GemmBatch batch) {
  constexpr bool bf16 = is_bf16<A> || is_bf16<B> || is_bf16<C>;
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
    if (row < m && ka < k) av = to_float(trans_a ? a[(long)ka * lda + row] : a[(long)row * lda + ka]);
    if (col < n && kb < k) bv = to_float(trans_b ? b[(long)col * ldb + kb] : b[(long)kb * ldb + col]);
    as[threadIdx.y][threadIdx.x] = bf16 ? round_bf16(av) : av;
    bs[threadIdx.y][threadIdx.x] = bf16 ? round_bf16(bv) : bv;
    __syncthreads();
    for (int i = 0; i < kTile; ++i) acc += as[threadIdx.y][i] * bs[i][threadIdx.x];
    __syncthreads();
  }
  if (row < m && col < n) {
    C* out = c + (long)row * ldc + col;
    *out = from_float<C>(alpha * acc + (beta != 0.0f ? beta * to_float(*out) : 0.0f));
  }
}

}  // namespace kaio_gpu
