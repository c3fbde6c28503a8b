#pragma once
// The reconstruction loss: mean squared error over the masked tubelets only,
// against targets normalised per tubelet: (p - mean) / sqrt(var + 1e-6), with
// the biased variance of that tubelet's patch_dim values.
#include <cstdint>

namespace kaio::train::cpu {

inline constexpr float kTargetNormEps = 1e-6f;

// Returns the loss and writes its gradient w.r.t. pred into dpred (zero on
// visible rows). mask has one byte per row (1 = masked).
double masked_mse_forward_backward(float* dpred, const float* pred, const float* patches, const uint8_t* mask, int rows,
                                   int patch_dim);

}  // namespace kaio::train::cpu
