#pragma once
// Fully connected layer, PyTorch layout: weight is [out_dim, in_dim].
// out[rows, out_dim] = in[rows, in_dim] * weight^T + bias.
namespace kaio::train::cpu {

void linear_forward(float* out, const float* in, const float* weight, const float* bias, int rows, int in_dim,
                    int out_dim);
// din is overwritten (skipped when null); dweight and dbias accumulate.
void linear_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in, const float* weight,
                     int rows, int in_dim, int out_dim);

}  // namespace kaio::train::cpu
