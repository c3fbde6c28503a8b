#pragma once
// Layer normalisation over the last dimension (biased variance, eps 1e-5 as in
// torch.nn.LayerNorm). mean and rstd are kept per row for the backward pass.
namespace kaio::train::cpu {

inline constexpr float kLayerNormEps = 1e-5f;

void layernorm_forward(float* out, float* mean, float* rstd, const float* in, const float* weight, const float* bias,
                       int rows, int dim);
// din accumulates (it already holds the residual stream's gradient); dweight, dbias accumulate.
void layernorm_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in,
                        const float* weight, const float* mean, const float* rstd, int rows, int dim);

}  // namespace kaio::train::cpu
