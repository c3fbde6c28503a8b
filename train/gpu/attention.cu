// Multi-head attention core: batched GEMMs over every (sample, head) plus a
// row softmax, forward and backward; layout as train/layers/attention.h.
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

// Fused forward: one thread per query row of one (sample, head); keys and
// values stream through shared memory in tiles and an online softmax (running
// max and sum) folds each tile into the output, so no score reaches memory
// before the output is done. A second pass over the keys writes the
// normalised probabilities that the backward pass reads.
constexpr int kFusedRows = 64, kFusedKeys = 32;

__device__ inline float operand(float x, bool bf16) {
  return bf16 ? round_bf16(x) : x;
}

template <int HD>
__global__ void fused_attention_forward_kernel(float* out, float* probs, const float* qkv, int n, int h, float scale,
                                               bool bf16) {
  __shared__ float keys[kFusedKeys][HD];
  __shared__ float values[kFusedKeys][HD];
  const int bh = blockIdx.y, d = h * HD, ld = 3 * d;
  const int row = blockIdx.x * kFusedRows + threadIdx.x;
  const bool active = row < n;
  const float* base = qkv + (long)(bh / h) * n * ld + (bh % h) * HD;
  float q[HD], acc[HD];
  for (int j = 0; j < HD; ++j) {
    q[j] = active ? operand(base[(long)row * ld + j], bf16) : 0.0f;
    acc[j] = 0.0f;
  }
  float top = -INFINITY, sum = 0.0f;
  for (int k0 = 0; k0 < n; k0 += kFusedKeys) {
    for (int i = threadIdx.x; i < kFusedKeys * HD; i += blockDim.x) {
      const int key = k0 + i / HD, j = i % HD;
      keys[i / HD][j] = key < n ? operand(base[(long)key * ld + d + j], bf16) : 0.0f;
      values[i / HD][j] = key < n ? operand(base[(long)key * ld + 2 * d + j], bf16) : 0.0f;
    }
    __syncthreads();
    const int tile = min(kFusedKeys, n - k0);
    for (int t = 0; t < tile; ++t) {
      float s = 0.0f;
      for (int j = 0; j < HD; ++j) s += q[j] * keys[t][j];
      s *= scale;
      const float new_top = fmaxf(top, s), rescale = expf(top - new_top), p = expf(s - new_top);
      sum = sum * rescale + p;
      for (int j = 0; j < HD; ++j) acc[j] = acc[j] * rescale + p * values[t][j];
      top = new_top;
    }
    __syncthreads();
  }
  const float inv = active ? 1.0f / sum : 0.0f;
  if (active)
    for (int j = 0; j < HD; ++j) out[((long)(bh / h) * n + row) * d + (bh % h) * HD + j] = acc[j] * inv;
  float* prow = probs + ((long)bh * n + row) * n;
  for (int k0 = 0; k0 < n; k0 += kFusedKeys) {
    for (int i = threadIdx.x; i < kFusedKeys * HD; i += blockDim.x) {
      const int key = k0 + i / HD, j = i % HD;
      keys[i / HD][j] = key < n ? operand(base[(long)key * ld + d + j], bf16) : 0.0f;
    }
    __syncthreads();
    const int tile = min(kFusedKeys, n - k0);
    for (int t = 0; active && t < tile; ++t) {
      float s = 0.0f;
      for (int j = 0; j < HD; ++j) s += q[j] * keys[t][j];
      prow[k0 + t] = expf(s * scale - top) * inv;
    }
    __syncthreads();
  }
}

template <int HD>
int launch_fused_attention(float* out, float* probs, const float* qkv, int b, int n, int h, bool bf16) {
  const dim3 grid((n + kFusedRows - 1) / kFusedRows, b * h);
  fused_attention_forward_kernel<HD>
      <<<grid, kFusedRows, 0, compute_stream()>>>(out, probs, qkv, n, h, 1.0f / sqrtf((float)HD), bf16);
  return check_launch("fused attention forward");
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

// The fused forward for the head widths it is built for (16, 32, 64, 128);
// other widths take the naive path.
extern "C" int KAIO_GPU_FN(attention_forward_fused)(float* out, float* probs, const float* qkv, int b, int n, int h,
                                                    int hd, int bf16) {
  switch (hd) {
    case 16:
      return launch_fused_attention<16>(out, probs, qkv, b, n, h, bf16);
    case 32:
      return launch_fused_attention<32>(out, probs, qkv, b, n, h, bf16);
    case 64:
      return launch_fused_attention<64>(out, probs, qkv, b, n, h, bf16);
    case 128:
      return launch_fused_attention<128>(out, probs, qkv, b, n, h, bf16);
    default:
      return KAIO_GPU_FN(attention_forward)(out, probs, qkv, b, n, h, hd, bf16);
  }
}
