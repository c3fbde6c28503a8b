// Multi-head attention core, forward and backward; layout as
// train/layers/attention.h. The naive path (batched GEMMs over every (sample,
// head) plus a row softmax, keeping the probabilities) is the reference; the
// fused path keeps one log-sum-exp per query row instead.
#include <math.h>

#include "kernels.h"

namespace kaio_gpu {
namespace {

__global__ void softmax_rows_kernel(float* p, int cols) {
  float* row = p + (long)blockIdx.x * cols;
  float top = -INFINITY;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) top = fmaxf(top, row[c]);
  // Tree max in shared memory (blockDim.x is a power of two, at most 256).
  __shared__ float tops[256];
  tops[threadIdx.x] = top;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) tops[threadIdx.x] = fmaxf(tops[threadIdx.x], tops[threadIdx.x + stride]);
    __syncthreads();
  }
  top = tops[0];
  float sum = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float e = expf(row[c] - top);
    row[c] = e;
    sum += e;
  }
  const float inv = 1.0f / block_sum(sum);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) row[c] *= inv;
}

__global__ void softmax_backward_rows_kernel(float* dp, const float* p, int cols) {
  float* d = dp + (long)blockIdx.x * cols;
  const float* y = p + (long)blockIdx.x * cols;
  float dot = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dot += d[c] * y[c];
  dot = block_sum(dot);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) d[c] = y[c] * (d[c] - dot);
}

GemmBatch batch(int count, int inner, long ao, long ai, long bo, long bi, long co, long ci) {
  GemmBatch g;
  g.count = count;
  g.inner = inner;
  g.a_outer = ao, g.a_inner = ai, g.b_outer = bo, g.b_inner = bi, g.c_outer = co, g.c_inner = ci;
  return g;
}

// Fused attention (flash-attention-2 style), one thread per row of a (sample,
// head) and tiles of the other side streamed through shared memory. The
// forward folds key tiles into the output with an online softmax (running max
// and sum) and keeps only each query row's log-sum-exp of the scaled scores;
// the backward recomputes P = exp(S - lse) tile by tile, so no T x T matrix
// ever reaches memory.
constexpr int kRowsPerBlock = 64, kTileRows = 32;

__device__ inline float operand(float x, bool bf16) {
  return bf16 ? round_bf16(x) : x;
}

template <int HD>
__device__ inline float dot(const float* a, const float* b) {
  float s = 0.0f;
#pragma unroll
  for (int j = 0; j < HD; ++j) s += a[j] * b[j];
  return s;
}

// Where head `bh % h` of sample `bh / h` starts in a [batch, tokens, width] matrix.
__device__ inline long head_offset(int bh, int h, int n, int width, int hd) {
  return (long)(bh / h) * n * width + (bh % h) * hd;
}

// Loads rows [first, first + kTileRows) of one head's [n, HD] slice (row
// stride ld) into `tile`, zero past the last row, bf16-rounded when asked.
template <int HD>
__device__ inline void load_tile(float (*tile)[HD], const float* src, long ld, int first, int n, bool bf16) {
  for (int i = threadIdx.x; i < kTileRows * HD; i += blockDim.x) {
    const int r = i / HD, j = i % HD;
    tile[r][j] = first + r < n ? operand(src[(long)(first + r) * ld + j], bf16) : 0.0f;
  }
}

template <int HD>
__global__ void fused_forward_kernel(float* out, float* lse, const float* qkv, int n, int h, float scale, bool bf16) {
  __shared__ float keys[kTileRows][HD];
  __shared__ float values[kTileRows][HD];
  const int bh = blockIdx.y, d = h * HD, ld = 3 * d;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x;
  const bool active = row < n;
  const float* q_head = qkv + head_offset(bh, h, n, ld, HD);
  float q[HD], acc[HD];
#pragma unroll
  for (int j = 0; j < HD; ++j) {
    q[j] = active ? operand(q_head[(long)row * ld + j], bf16) : 0.0f;
    acc[j] = 0.0f;
  }
  float top = -INFINITY, sum = 0.0f;
  for (int k0 = 0; k0 < n; k0 += kTileRows) {
    load_tile<HD>(keys, q_head + d, ld, k0, n, bf16);
    load_tile<HD>(values, q_head + 2 * d, ld, k0, n, bf16);
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
  float* o = out + head_offset(bh, h, n, d, HD) + (long)row * d;
#pragma unroll
  for (int j = 0; j < HD; ++j) o[j] = acc[j] / sum;
  lse[(long)bh * n + row] = top + logf(sum);
}

// D_i = rowsum(dO_i * O_i) = sum_j P_ij dP_ij, the softmax backward's row term,
// for every (sample, head, query row); index (bh * n + row) like lse.
__global__ void row_dots_kernel(float* row_dots, const float* dout, const float* out, int n, int h, int hd,
                                long total) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int bh = (int)(i / n), row = (int)(i % n), d = h * hd;
  const long at = head_offset(bh, h, n, d, hd) + (long)row * d;
  float s = 0.0f;
  for (int j = 0; j < hd; ++j) s += dout[at + j] * out[at + j];
  row_dots[i] = s;
}

// dK and dV: one thread per key row, streaming every query tile (Q, dO, lse,
// D) through shared memory. dV_j = sum_i P_ij dO_i; dK_j = scale sum_i dS_ij
// Q_i with dS_ij = P_ij (dO_i . V_j - D_i).
template <int HD>
__global__ void fused_backward_keys_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                                           const float* row_dots, int n, int h, float scale, bool bf16) {
  __shared__ float queries[kTileRows][HD];
  __shared__ float grads[kTileRows][HD];
  __shared__ float tile_lse[kTileRows];
  __shared__ float tile_dots[kTileRows];
  const int bh = blockIdx.y, d = h * HD, ld = 3 * d;
  const int key = blockIdx.x * kRowsPerBlock + threadIdx.x;
  const bool active = key < n;
  const float* q_head = qkv + head_offset(bh, h, n, ld, HD);
  const float* dout_head = dout + head_offset(bh, h, n, d, HD);
  float k[HD], v[HD], dk[HD], dv[HD];
#pragma unroll
  for (int j = 0; j < HD; ++j) {
    k[j] = active ? operand(q_head[(long)key * ld + d + j], bf16) : 0.0f;
    v[j] = active ? operand(q_head[(long)key * ld + 2 * d + j], bf16) : 0.0f;
    dk[j] = dv[j] = 0.0f;
  }
  for (int q0 = 0; q0 < n; q0 += kTileRows) {
    load_tile<HD>(queries, q_head, ld, q0, n, bf16);
    load_tile<HD>(grads, dout_head, d, q0, n, bf16);
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
  float* dk_row = dqkv + head_offset(bh, h, n, ld, HD) + (long)key * ld + d;
#pragma unroll
  for (int j = 0; j < HD; ++j) {
    dk_row[j] = dk[j] * scale;
    dk_row[d + j] = dv[j];
  }
}

// dQ: one thread per query row, streaming every key tile (K, V) through shared
// memory. dQ_i = scale sum_j dS_ij K_j.
template <int HD>
__global__ void fused_backward_queries_kernel(float* dqkv, const float* dout, const float* qkv, const float* lse,
                                              const float* row_dots, int n, int h, float scale, bool bf16) {
  __shared__ float keys[kTileRows][HD];
  __shared__ float values[kTileRows][HD];
  const int bh = blockIdx.y, d = h * HD, ld = 3 * d;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x;
  const bool active = row < n;
  const float* q_head = qkv + head_offset(bh, h, n, ld, HD);
  const float* dout_row = dout + head_offset(bh, h, n, d, HD) + (long)row * d;
  float q[HD], grad[HD], dq[HD];
#pragma unroll
  for (int j = 0; j < HD; ++j) {
    q[j] = active ? operand(q_head[(long)row * ld + j], bf16) : 0.0f;
    grad[j] = active ? operand(dout_row[j], bf16) : 0.0f;
    dq[j] = 0.0f;
  }
  const float row_lse = active ? lse[(long)bh * n + row] : 0.0f;
  const float row_dot = active ? row_dots[(long)bh * n + row] : 0.0f;
  for (int k0 = 0; k0 < n; k0 += kTileRows) {
    load_tile<HD>(keys, q_head + d, ld, k0, n, bf16);
    load_tile<HD>(values, q_head + 2 * d, ld, k0, n, bf16);
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
  float* dq_row = dqkv + head_offset(bh, h, n, ld, HD) + (long)row * ld;
#pragma unroll
  for (int j = 0; j < HD; ++j) dq_row[j] = dq[j] * scale;
}

dim3 fused_grid(int b, int n, int h) {
  return dim3((n + kRowsPerBlock - 1) / kRowsPerBlock, b * h);
}

template <int HD>
int launch_fused_forward(float* out, float* lse, const float* qkv, int b, int n, int h, bool bf16) {
  fused_forward_kernel<HD>
      <<<fused_grid(b, n, h), kRowsPerBlock, 0, compute_stream()>>>(out, lse, qkv, n, h, 1.0f / sqrtf((float)HD), bf16);
  return check_launch("fused attention forward");
}

// D first, then dK and dV, then dQ: each output element is written by one
// thread of one kernel, so no atomics.
template <int HD>
int launch_fused_backward(float* dqkv, float* row_dots, const float* dout, const float* out, const float* qkv,
                          const float* lse, int b, int n, int h, bool bf16) {
  const long rows = (long)b * h * n;
  row_dots_kernel<<<blocks_for(rows, 256), 256, 0, compute_stream()>>>(row_dots, dout, out, n, h, HD, rows);
  if (check_launch("attention row dots")) return -1;
  const float scale = 1.0f / sqrtf((float)HD);
  fused_backward_keys_kernel<HD>
      <<<fused_grid(b, n, h), kRowsPerBlock, 0, compute_stream()>>>(dqkv, dout, qkv, lse, row_dots, n, h, scale, bf16);
  if (check_launch("fused attention backward (keys)")) return -1;
  fused_backward_queries_kernel<HD>
      <<<fused_grid(b, n, h), kRowsPerBlock, 0, compute_stream()>>>(dqkv, dout, qkv, lse, row_dots, n, h, scale, bf16);
  return check_launch("fused attention backward (queries)");
}

// At least 64 so a block is never narrower than a CDNA wavefront.
unsigned row_threads(int cols) {
  return cols >= 256 ? 256 : 64;
}

}  // namespace
}  // namespace kaio_gpu

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(attention_forward)(float* out, float* probs, const float* qkv, int b, int n, int h, int hd,
                                              int bf16) {
  const int d = h * hd, ld = 3 * d, bh = b * h;
  const long qo = (long)n * ld, po = (long)h * n * n, pi = (long)n * n, oo = (long)n * d;
  const float scale = 1.0f / sqrtf((float)hd);
  if (gemm(false, true, n, n, hd, scale, qkv, ld, qkv + d, ld, 0.0f, probs, n, batch(bh, h, qo, hd, qo, hd, po, pi),
           bf16))
    return -1;
  softmax_rows_kernel<<<bh * n, row_threads(n), 0, compute_stream()>>>(probs, n);
  if (check_launch("softmax")) return -1;
  return gemm(false, false, n, hd, n, 1.0f, probs, n, qkv + 2 * d, ld, 0.0f, out, d,
              batch(bh, h, po, pi, qo, hd, oo, hd), bf16);
}

extern "C" int KAIO_GPU_FN(attention_backward)(float* dqkv, float* dprobs, const float* dout, const float* qkv,
                                               const float* probs, int b, int n, int h, int hd, int bf16) {
  const int d = h * hd, ld = 3 * d, bh = b * h;
  const long qo = (long)n * ld, po = (long)h * n * n, pi = (long)n * n, oo = (long)n * d;
  const float scale = 1.0f / sqrtf((float)hd);
  // dP = dO V^T ; dV = P^T dO
  if (gemm(false, true, n, n, hd, 1.0f, dout, d, qkv + 2 * d, ld, 0.0f, dprobs, n, batch(bh, h, oo, hd, qo, hd, po, pi),
           bf16))
    return -1;
  if (gemm(true, false, n, hd, n, 1.0f, probs, n, dout, d, 0.0f, dqkv + 2 * d, ld, batch(bh, h, po, pi, oo, hd, qo, hd),
           bf16))
    return -1;
  softmax_backward_rows_kernel<<<bh * n, row_threads(n), 0, compute_stream()>>>(dprobs, probs, n);
  if (check_launch("softmax_backward")) return -1;
  // dQ = scale dS K ; dK = scale dS^T Q
  if (gemm(false, false, n, hd, n, scale, dprobs, n, qkv + d, ld, 0.0f, dqkv, ld, batch(bh, h, po, pi, qo, hd, qo, hd),
           bf16))
    return -1;
  return gemm(true, false, n, hd, n, scale, dprobs, n, qkv, ld, 0.0f, dqkv + d, ld,
              batch(bh, h, po, pi, qo, hd, qo, hd), bf16);
}

// The fused kernels exist for these head widths (the switches below); the
// backend sends other widths down the naive path.
extern "C" int KAIO_GPU_FN(attention_fused_supports)(int head_dim) {
  return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
}

extern "C" int KAIO_GPU_FN(attention_forward_fused)(float* out, float* lse, const float* qkv, int b, int n, int h,
                                                    int hd, int bf16) {
  switch (hd) {
    case 16:
      return launch_fused_forward<16>(out, lse, qkv, b, n, h, bf16);
    case 32:
      return launch_fused_forward<32>(out, lse, qkv, b, n, h, bf16);
    case 64:
      return launch_fused_forward<64>(out, lse, qkv, b, n, h, bf16);
    case 128:
      return launch_fused_forward<128>(out, lse, qkv, b, n, h, bf16);
    default:
      return fail("fused attention forward", "head width not built");
  }
}

extern "C" int KAIO_GPU_FN(attention_backward_fused)(float* dqkv, float* row_dots, const float* dout, const float* out,
                                                     const float* qkv, const float* lse, int b, int n, int h, int hd,
                                                     int bf16) {
  switch (hd) {
    case 16:
      return launch_fused_backward<16>(dqkv, row_dots, dout, out, qkv, lse, b, n, h, bf16);
    case 32:
      return launch_fused_backward<32>(dqkv, row_dots, dout, out, qkv, lse, b, n, h, bf16);
    case 64:
      return launch_fused_backward<64>(dqkv, row_dots, dout, out, qkv, lse, b, n, h, bf16);
    case 128:
      return launch_fused_backward<128>(dqkv, row_dots, dout, out, qkv, lse, b, n, h, bf16);
    default:
      return fail("fused attention backward", "head width not built");
  }
}
