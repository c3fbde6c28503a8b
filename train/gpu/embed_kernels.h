#pragma once
// Tubelet patchify (uint8 to normalised values) and the mask-token and
// positional-embedding combine, forward and backward, per element type.
// Device code only: embed.cu launches it, and tests/train/ops_host_test.cpp
// runs it on the host (tests/train/host_shim.h).
#include <stdint.h>

#include "element.h"
#include "gpu_api.h"

namespace kaio_gpu {
namespace {

__constant__ float kMean[3] = {0.485f, 0.456f, 0.406f};
__constant__ float kStd[3] = {0.229f, 0.224f, 0.225f};

template <typename T>
__global__ void patchify_kernel(T* patches, const uint8_t* windows, long total, KaioGpuGrid g) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int gs = g.size / g.tubelet_size, ts = g.tubelet_size;
  const int pd = g.tubelet_frames * ts * ts * 3;
  const int tokens = (g.frames / g.tubelet_frames) * gs * gs;
  const long bn = i / pd;
  const int e = (int)(i % pd), n = (int)(bn % tokens);
  const long b = bn / tokens;
  const int c = e % 3, dx = (e / 3) % ts, dy = (e / (3 * ts)) % ts, dt = e / (3 * ts * ts);
  const int ti = n / (gs * gs), yi = (n / gs) % gs, xi = n % gs;
  const int frame = ti * g.tubelet_frames + dt, row = yi * ts + dy, col = xi * ts + dx;
  const long pixel = (((long)frame * g.size + row) * g.size + col) * 3 + c;
  const long window = (long)g.frames * g.size * g.size * 3;
  patches[i] = from_float<T>((windows[b * window + pixel] / 255.0f - kMean[c]) / kStd[c]);
}

template <typename T>
__global__ void combine_forward_kernel(T* x, const T* emb, const float* token, const float* pos, const uint8_t* mask,
                                       long total, int tokens, int dim) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const long bn = i / dim;
  const int k = (int)(i % dim);
  x[i] = from_float<T>((mask[bn] ? token[k] : to_float(emb[i])) + pos[(bn % tokens) * dim + k]);
}

// One thread per (token, channel): sums over the batch, no atomics needed.
template <typename T>
__global__ void combine_backward_kernel(T* demb, float* dpos, const T* dx, const uint8_t* mask, int batch, int tokens,
                                        int dim) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long)tokens * dim) return;
  float acc = 0.0f;
  for (int b = 0; b < batch; ++b) {
    const long at = (long)b * tokens * dim + i;
    const float g = to_float(dx[at]);
    acc += g;
    demb[at] = from_float<T>(mask[at / dim] ? 0.0f : g);
  }
  dpos[i] += acc;
}

template <typename T>
__global__ void mask_token_grad_kernel(float* dtoken, const T* dx, const uint8_t* mask, long rows, int dim) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= dim) return;
  float acc = 0.0f;
  for (long r = 0; r < rows; ++r)
    if (mask[r]) acc += to_float(dx[r * dim + k]);
  dtoken[k] += acc;
}

}  // namespace
}  // namespace kaio_gpu
