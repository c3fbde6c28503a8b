#include "train/layers/tubelet_embed.h"

namespace kaio::train::cpu {
namespace {
constexpr float kMean[3] = {0.485f, 0.456f, 0.406f};
constexpr float kStd[3] = {0.229f, 0.224f, 0.225f};
}  // namespace

void patchify(float* patches, const uint8_t* windows, int batch, const TubeletGrid& g) {
  const int gs = g.grid_hw(), tt = g.tubelet_frames, ts = g.tubelet_size;
  const int tokens = g.tokens(), pd = g.patch_dim();
#pragma omp parallel for
  for (long bn = 0; bn < static_cast<long>(batch) * tokens; ++bn) {
    const long b = bn / tokens;
    const int n = static_cast<int>(bn % tokens);
    const int ti = n / (gs * gs), yi = (n / gs) % gs, xi = n % gs;
    const uint8_t* w = windows + b * g.window_bytes();
    float* out = patches + bn * pd;
    for (int dt = 0; dt < tt; ++dt)
      for (int dy = 0; dy < ts; ++dy)
        for (int dx = 0; dx < ts; ++dx) {
          const long pix = ((static_cast<long>(ti * tt + dt) * g.size + yi * ts + dy) * g.size + xi * ts + dx) * 3;
          for (int c = 0; c < 3; ++c) *out++ = (w[pix + c] / 255.0f - kMean[c]) / kStd[c];
        }
  }
}

void embed_combine_forward(float* x, const float* emb, const float* mask_token, const float* pos, const uint8_t* mask,
                           int batch, int tokens, int dim) {
#pragma omp parallel for
  for (long bn = 0; bn < static_cast<long>(batch) * tokens; ++bn) {
    const float* src = mask[bn] ? mask_token : emb + bn * dim;
    const float* p = pos + (bn % tokens) * dim;
    for (int i = 0; i < dim; ++i) x[bn * dim + i] = src[i] + p[i];
  }
}

void embed_combine_backward(float* demb, float* dmask_token, float* dpos, const float* dx, const uint8_t* mask,
                            int batch, int tokens, int dim) {
#pragma omp parallel for
  for (int n = 0; n < tokens; ++n) {
    for (int b = 0; b < batch; ++b) {
      const long bn = static_cast<long>(b) * tokens + n;
      for (int i = 0; i < dim; ++i) {
        dpos[static_cast<long>(n) * dim + i] += dx[bn * dim + i];
        demb[bn * dim + i] = mask[bn] ? 0.0f : dx[bn * dim + i];
      }
    }
  }
  for (long bn = 0; bn < static_cast<long>(batch) * tokens; ++bn)
    if (mask[bn])
      for (int i = 0; i < dim; ++i) dmask_token[i] += dx[bn * dim + i];
}

}  // namespace kaio::train::cpu
