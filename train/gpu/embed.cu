// Tubelet embedding around the linear layer: patchify (uint8 to normalised
// tubelets) and the mask-token / positional-embedding combine, as in
// train/layers/tubelet_embed.h.
#include "kernels.h"

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
  const long pixel = (((long)(ti * g.tubelet_frames + dt) * g.size + yi * ts + dy) * g.size + xi * ts + dx) * 3 + c;
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

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(patchify)(void* patches, const uint8_t* windows, int batch, KaioGpuGrid g, int bf16) {
  const long tokens = (long)(g.frames / g.tubelet_frames) * (g.size / g.tubelet_size) * (g.size / g.tubelet_size);
  const long total = batch * tokens * g.tubelet_frames * g.tubelet_size * g.tubelet_size * 3;
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    patchify_kernel<<<blocks_for(total, 256), 256, 0, compute_stream()>>>(as<T>(patches), windows, total, g);
    return check_launch("patchify");
  });
}

extern "C" int KAIO_GPU_FN(embed_combine_forward)(void* x, const void* emb, const float* token, const float* pos,
                                                  const uint8_t* mask, int batch, int tokens, int dim, int bf16) {
  const long total = (long)batch * tokens * dim;
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    combine_forward_kernel<<<blocks_for(total, 256), 256, 0, compute_stream()>>>(as<T>(x), as<T>(emb), token, pos, mask,
                                                                                 total, tokens, dim);
    return check_launch("embed_combine_forward");
  });
}

extern "C" int KAIO_GPU_FN(embed_combine_backward)(void* demb, float* dtoken, float* dpos, const void* dx,
                                                   const uint8_t* mask, int batch, int tokens, int dim, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    combine_backward_kernel<<<blocks_for((size_t)tokens * dim, 256), 256, 0, compute_stream()>>>(
        as<T>(demb), dpos, as<T>(dx), mask, batch, tokens, dim);
    mask_token_grad_kernel<<<blocks_for(dim, 64), 64, 0, compute_stream()>>>(dtoken, as<T>(dx), mask,
                                                                             (long)batch * tokens, dim);
    return check_launch("embed_combine_backward");
  });
}
