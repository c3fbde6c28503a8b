#pragma once
// GELU, tanh approximation (torch.nn.GELU(approximate="tanh")).
#include <cstddef>

namespace kaio::train::cpu {

void gelu_forward(float* out, const float* in, size_t n);
// din is overwritten.
void gelu_backward(float* din, const float* dout, const float* in, size_t n);

}  // namespace kaio::train::cpu
