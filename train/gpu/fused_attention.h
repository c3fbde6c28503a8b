#pragma once
// The fused attention kernels' device code, one source for hip and cuda.
// attention.cu includes it after kernels.h; tests/train/fused_attention_host_test.cpp
// after tests/train/host_shim.h, which runs every GPU thread of a block as a
// std::thread (__syncthreads a barrier), so CPU builds check the arithmetic
// and the index bounds of the real kernels.
#include "element.h"

namespace kaio_gpu {
namespace fused_attention {

// Fused attention (flash-attention-2 style), one thread per row of a (sample,
// head) and tiles of the other side streamed through shared memory. The
// forward folds key tiles into the output with an online softmax (running max
// and sum) and keeps only each query row's log-sum-exp of the scaled scores;
// the backward recomputes P = exp(S - lse) tile by tile, so no T x T matrix
// ever reaches memory.
constexpr int kRowsPerBlock = 64, kTileRows = 32;

// The kernels are built per element type T of the activations (float or
// Bf16, element.h); with Bf16 the products' other operands (P and dS) are
// rounded to bf16 as well, and everything accumulates in fp32.
__device__ inline float operand(float x, bool bf16) {
  return bf16 ? round_bf16(x) : x;
}

template <int HD, typename A, typename B>
__device__ inline float dot(const A* a, const B* b) {
  float s = 0.0f;
#pragma unroll
  for (int j = 0; j < HD; ++j) s += to_float(a[j]) * to_float(b[j]);
  return s;
}

// Where head `bh % h` of sample `bh / h` starts in a [batch, tokens, width] matrix.
__device__ inline long head_offset(int bh, int h, int n, int width, int hd) {
  return (long)(bh / h) * n * width + (long)(bh % h) * hd;
}

// Loads rows [first, first + kTileRows) of one head's [n, HD] slice (row
// stride ld) into `tile`, zero past the last row.
template <int HD, typename T>
__device__ inline void load_tile(float (*tile)[HD], const T* src, long ld, int first, int n) {
  for (int i = threadIdx.x; i < kTileRows * HD; i += blockDim.x) {
    const int r = i / HD, j = i % HD;
    tile[r][j] = first + r < n ? to_float(src[(long)(first + r) * ld + j]) : 0.0f;
  }
}

template <int HD, typename T>
__global__ void fused_forward_kernel(T* out, float* lse, const T* qkv, int n, int h, float scale) {
  __shared__ float keys[kTileRows][HD];
  __shared__ float values[kTileRows][HD];
  const int bh = blockIdx.y, d = h * HD, ld = 3 * d;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x;
  const bool active = row < n;
  const T* q_head = qkv + head_offset(bh, h, n, ld, HD);
  float q[HD], acc[HD];
#pragma unroll
  for (int j = 0; j < HD; ++j) {
    q[j] = active ? to_float(q_head[(long)row * ld + j]) : 0.0f;
    acc[j] = 0.0f;
  }
  float top = -INFINITY, sum = 0.0f;
  for (int k0 = 0; k0 < n; k0 += kTileRows) {
    load_tile<HD>(keys, q_head + d, ld, k0, n);
    load_tile<HD>(values, q_head + 2L * d, ld, k0, n);
    __syncthreads();
    const int tile = min(kTileRows, n - k0);
    for (int t = 0; t < tile; ++t) {
      const float s = dot<HD>(q, keys[t]) * scale;
      const float new_top = fmaxf(top, s), rescale = expf(top - new_top), p = expf(s - new_top);
      sum = sum * rescale + p;
#pragma unroll
      for (int j = 0; j < HD; ++j) acc[j] = acc[j] * rescale + p * values[t][j];
      top = new_top;
    }
    __syncthreads();
  }
  if (!active) return;
  T* o = out + head_offset(bh, h, n, d, HD) + (long)row * d;
#pragma unroll
  for (int j = 0; j < HD; ++j) o[j] = from_float<T>(acc[j] / sum);
  lse[(long)bh * n + row] = top + logf(sum);
}

// D_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij, the softmax backward's row term,
// for every (sample, head, query row); index (bh * n + row) like lse.
template <int HD, typename T>
__global__ void row_dots_kernel(float* row_dots, const T* dout, const T* out, int n, int h, long total) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int bh = (int)(i / n), row = (int)(i % n), d = h * HD;
  const long at = head_offset(bh, h, n, d, HD) + (long)row * d;
  row_dots[i] = dot<HD>(dout + at, out + at);
}

// dK and dV: one thread per key row, streaming every query tile (Q, dO, lse,
// D) through shared memory. dV_j = sum_i P_ij dO_i; dK_j = scale sum_i dS_ij
// Q_i with dS_ij = P_ij (dO_i . V_j - D_i).
template <int HD, typename T>
__global__ void fused_backward_keys_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse,
                                           const float* row_dots, int n, int h, float scale) {
  constexpr bool bf16 = is_bf16<T>;
  __shared__ float queries[kTileRows][HD];
  __shared__ float grads[kTileRows][HD];
  __shared__ float tile_lse[kTileRows];
  __shared__ float tile_dots[kTileRows];
  const int bh = blockIdx.y, d = h * HD, ld = 3 * d;
  const int key = blockIdx.x * kRowsPerBlock + threadIdx.x;
  const bool active = key < n;
  const T* q_head = qkv + head_offset(bh, h, n, ld, HD);
  const T* dout_head = dout + head_offset(bh, h, n, d, HD);
  float k[HD], v[HD], dk[HD], dv[HD];
#pragma unroll
  for (int j = 0; j < HD; ++j) {
    k[j] = active ? to_float(q_head[(long)key * ld + d + j]) : 0.0f;
    v[j] = active ? to_float(q_head[(long)key * ld + 2L * d + j]) : 0.0f;
    dk[j] = dv[j] = 0.0f;
  }
  for (int q0 = 0; q0 < n; q0 += kTileRows) {
    load_tile<HD>(queries, q_head, ld, q0, n);
    load_tile<HD>(grads, dout_head, d, q0, n);
    for (int r = threadIdx.x; r < kTileRows; r += blockDim.x) {
      tile_lse[r] = q0 + r < n ? lse[(long)bh * n + q0 + r] : 0.0f;
      tile_dots[r] = q0 + r < n ? row_dots[(long)bh * n + q0 + r] : 0.0f;
    }
    __syncthreads();
    const int tile = min(kTileRows, n - q0);
    for (int t = 0; t < tile; ++t) {
      const float p = expf(dot<HD>(queries[t], k) * scale - tile_lse[t]);
      const float ds = p * (dot<HD>(grads[t], v) - tile_dots[t]);
      const float p_op = operand(p, bf16), ds_op = operand(ds, bf16);
#pragma unroll
      for (int j = 0; j < HD; ++j) {
        dv[j] += p_op * grads[t][j];
        dk[j] += ds_op * queries[t][j];
      }
    }
    __syncthreads();
  }
  if (!active) return;
  T* dk_row = dqkv + head_offset(bh, h, n, ld, HD) + (long)key * ld + d;
#pragma unroll
  for (int j = 0; j < HD; ++j) {
    dk_row[j] = from_float<T>(dk[j] * scale);
    dk_row[d + j] = from_float<T>(dv[j]);
  }
}

// dQ: one thread per query row, streaming every key tile (K, V) through shared
// memory. dQ_i = scale sum_j dS_ij K_j.
template <int HD, typename T>
__global__ void fused_backward_queries_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse,
                                              const float* row_dots, int n, int h, float scale) {
  constexpr bool bf16 = is_bf16<T>;
  __shared__ float keys[kTileRows][HD];
  __shared__ float values[kTileRows][HD];
  const int bh = blockIdx.y, d = h * HD, ld = 3 * d;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x;
  const bool active = row < n;
  const T* q_head = qkv + head_offset(bh, h, n, ld, HD);
  const T* dout_row = dout + head_offset(bh, h, n, d, HD) + (long)row * d;
  float q[HD], grad[HD], dq[HD];
#pragma unroll
  for (int j = 0; j < HD; ++j) {
    q[j] = active ? to_float(q_head[(long)row * ld + j]) : 0.0f;
    grad[j] = active ? to_float(dout_row[j]) : 0.0f;
    dq[j] = 0.0f;
  }
  const float row_lse = active ? lse[(long)bh * n + row] : 0.0f;
  const float row_dot = active ? row_dots[(long)bh * n + row] : 0.0f;
  for (int k0 = 0; k0 < n; k0 += kTileRows) {
    load_tile<HD>(keys, q_head + d, ld, k0, n);
    load_tile<HD>(values, q_head + 2L * d, ld, k0, n);
    __syncthreads();
    const int tile = min(kTileRows, n - k0);
    for (int t = 0; t < tile; ++t) {
      const float p = expf(dot<HD>(q, keys[t]) * scale - row_lse);
      const float ds_op = operand(p * (dot<HD>(grad, values[t]) - row_dot), bf16);
#pragma unroll
      for (int j = 0; j < HD; ++j) dq[j] += ds_op * keys[t][j];
    }
    __syncthreads();
  }
  if (!active) return;
  T* dq_row = dqkv + head_offset(bh, h, n, ld, HD) + (long)row * ld;
#pragma unroll
  for (int j = 0; j < HD; ++j) dq_row[j] = from_float<T>(dq[j] * scale);
}

}  // namespace fused_attention
}  // namespace kaio_gpu
