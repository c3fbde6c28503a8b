// Multi-head attention core, forward and backward; layout as
// train/layers/attention.h. The naive path (batched GEMMs over every (sample,
// head) plus a row softmax, keeping the probabilities) is the reference; the
// fused path keeps one log-sum-exp per query row instead.
#include <math.h>

#include "kernels.h"
// After kernels.h: the fused kernels use its vendor names and namespace.
#include "fused_attention.h"
#include "softmax_kernels.h"

namespace kaio_gpu {
namespace {
using namespace fused_attention;

// At least 64 so a block is never narrower than a CDNA wavefront.
unsigned row_threads(int cols) {
  return cols >= 256 ? 256 : 64;
}

dim3 fused_grid(int b, int n, int h) {
  return dim3((n + kRowsPerBlock - 1) / kRowsPerBlock, b * h);
}

template <int HD, typename T>
int launch_fused_forward(T* out, float* lse, const T* qkv, int b, int n, int h) {
  fused_forward_kernel<HD>
      <<<fused_grid(b, n, h), kRowsPerBlock, 0, compute_stream()>>>(out, lse, qkv, n, h, 1.0f / sqrtf((float)HD));
  return check_launch("fused attention forward");
}

// D first, then dK and dV, then dQ: each output element is written by one
// thread of one kernel, so no atomics.
template <int HD, typename T>
int launch_fused_backward(T* dqkv, float* row_dots, const T* dout, const T* out, const T* qkv, const float* lse, int b,
                          int n, int h) {
  const long rows = (long)b * h * n;
  row_dots_kernel<HD><<<blocks_for(rows, 256), 256, 0, compute_stream()>>>(row_dots, dout, out, n, h, rows);
  if (check_launch("attention row dots")) return -1;
  const float scale = 1.0f / sqrtf((float)HD);
  fused_backward_keys_kernel<HD>
      <<<fused_grid(b, n, h), kRowsPerBlock, 0, compute_stream()>>>(dqkv, dout, qkv, lse, row_dots, n, h, scale);
  if (check_launch("fused attention backward (keys)")) return -1;
  fused_backward_queries_kernel<HD>
      <<<fused_grid(b, n, h), kRowsPerBlock, 0, compute_stream()>>>(dqkv, dout, qkv, lse, row_dots, n, h, scale);
  return check_launch("fused attention backward (queries)");
}

template <typename T>
int attention_forward_as(T* out, float* probs, const T* qkv, int b, int n, int h, int hd) {
  const int d = h * hd, ld = 3 * d, bh = b * h;
  const long qo = (long)n * ld, po = (long)h * n * n, pi = (long)n * n, oo = (long)n * d;
  const float scale = 1.0f / sqrtf((float)hd);
  if (gemm(false, true, n, n, hd, scale, qkv, ld, qkv + d, ld, 0.0f, probs, n,
           gemm_batch(bh, h, qo, hd, qo, hd, po, pi)))
    return -1;
  softmax_rows_kernel<<<bh * n, row_threads(n), 0, compute_stream()>>>(probs, n);
  if (check_launch("softmax")) return -1;
  return gemm(false, false, n, hd, n, 1.0f, probs, n, qkv + 2 * d, ld, 0.0f, out, d,
              gemm_batch(bh, h, po, pi, qo, hd, oo, hd));
}

template <typename T>
int attention_backward_as(T* dqkv, float* dprobs, const T* dout, const T* qkv, const float* probs, int b, int n, int h,
                          int hd) {
  const int d = h * hd, ld = 3 * d, bh = b * h;
  const long qo = (long)n * ld, po = (long)h * n * n, pi = (long)n * n, oo = (long)n * d;
  const float scale = 1.0f / sqrtf((float)hd);
  // dP = dO V^T ; dV = P^T dO
  if (gemm(false, true, n, n, hd, 1.0f, dout, d, qkv + 2 * d, ld, 0.0f, dprobs, n,
           gemm_batch(bh, h, oo, hd, qo, hd, po, pi)))
    return -1;
  if (gemm(true, false, n, hd, n, 1.0f, probs, n, dout, d, 0.0f, dqkv + 2 * d, ld,
           gemm_batch(bh, h, po, pi, oo, hd, qo, hd)))
    return -1;
  softmax_backward_rows_kernel<<<bh * n, row_threads(n), 0, compute_stream()>>>(dprobs, probs, n);
  if (check_launch("softmax_backward")) return -1;
  // dQ = scale dS K ; dK = scale dS^T Q
  if (gemm(false, false, n, hd, n, scale, dprobs, n, qkv + d, ld, 0.0f, dqkv, ld,
           gemm_batch(bh, h, po, pi, qo, hd, qo, hd)))
    return -1;
  return gemm(true, false, n, hd, n, scale, dprobs, n, qkv, ld, 0.0f, dqkv + d, ld,
              gemm_batch(bh, h, po, pi, qo, hd, qo, hd));
}

}  // namespace
}  // namespace kaio_gpu

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(attention_forward)(void* out, float* probs, const void* qkv, int b, int n, int h, int hd,
                                              int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return attention_forward_as(as<T>(out), probs, as<T>(qkv), b, n, h, hd);
  });
}

extern "C" int KAIO_GPU_FN(attention_backward)(void* dqkv, float* dprobs, const void* dout, const void* qkv,
                                               const float* probs, int b, int n, int h, int hd, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return attention_backward_as(as<T>(dqkv), dprobs, as<T>(dout), as<T>(qkv), probs, b, n, h, hd);
  });
}

// The fused kernels exist for these head widths (the switches below); the
// backend sends other widths down the naive path.
extern "C" int KAIO_GPU_FN(attention_fused_supports)(int head_dim) {
  return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
}

extern "C" int KAIO_GPU_FN(attention_forward_fused)(void* out, float* lse, const void* qkv, int b, int n, int h, int hd,
                                                    int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* o = as<T>(out);
    const T* in = as<T>(qkv);
    switch (hd) {
      case 16:
        return launch_fused_forward<16>(o, lse, in, b, n, h);
      case 32:
        return launch_fused_forward<32>(o, lse, in, b, n, h);
      case 64:
        return launch_fused_forward<64>(o, lse, in, b, n, h);
      case 128:
        return launch_fused_forward<128>(o, lse, in, b, n, h);
      default:
        return fail("fused attention forward", "head width not built");
    }
  });
}

extern "C" int KAIO_GPU_FN(attention_backward_fused)(void* dqkv, float* row_dots, const void* dout, const void* out,
                                                     const void* qkv, const float* lse, int b, int n, int h, int hd,
                                                     int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* dq = as<T>(dqkv);
    const T *dy = as<T>(dout), *y = as<T>(out), *in = as<T>(qkv);
    switch (hd) {
      case 16:
        return launch_fused_backward<16>(dq, row_dots, dy, y, in, lse, b, n, h);
      case 32:
        return launch_fused_backward<32>(dq, row_dots, dy, y, in, lse, b, n, h);
      case 64:
        return launch_fused_backward<64>(dq, row_dots, dy, y, in, lse, b, n, h);
      case 128:
        return launch_fused_backward<128>(dq, row_dots, dy, y, in, lse, b, n, h);
      default:
        return fail("fused attention backward", "head width not built");
    }
  });
}
