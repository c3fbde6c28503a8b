// Tubelet embedding around the linear layer: patchify (uint8 to normalised
// tubelets) and the mask-token / positional-embedding combine, as in
// train/layers/tubelet_embed.h.
#include "kernels.h"

// After kernels.h, which names the namespace per vendor.
#include "embed_kernels.h"

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
