#pragma once
// Tubelet embedding around the linear layer: windows [batch, T, H, W, 3] uint8
// are cut into tt x th x tw tubelets (token order: time, row, column; value
// order inside a tubelet: dt, dy, dx, channel) and normalised with the
// ImageNet mean/std. After the linear layer, masked tokens are replaced by the
// mask token and the positional embedding is added.
#include <cstdint>

namespace kaio::train {

struct TubeletGrid {
  int frames, size;  // window
  int tubelet_frames, tubelet_size;
  int grid_t() const { return frames / tubelet_frames; }
  int grid_hw() const { return size / tubelet_size; }
  int tokens() const { return grid_t() * grid_hw() * grid_hw(); }
  int patch_dim() const { return tubelet_frames * tubelet_size * tubelet_size * 3; }
  long window_bytes() const { return static_cast<long>(frames) * size * size * 3; }
};

namespace cpu {
void patchify(float* patches, const uint8_t* windows, int batch, const TubeletGrid& g);
// x[b,n] = (mask[b,n] ? mask_token : emb[b,n]) + pos[n]
void embed_combine_forward(float* x, const float* emb, const float* mask_token, const float* pos, const uint8_t* mask,
                           int batch, int tokens, int dim);
// demb is overwritten; dmask_token and dpos accumulate.
void embed_combine_backward(float* demb, float* dmask_token, float* dpos, const float* dx, const uint8_t* mask,
                            int batch, int tokens, int dim);
}  // namespace cpu

}  // namespace kaio::train
