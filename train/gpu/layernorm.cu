// LayerNorm over the last dimension: one block per row forward and for the
// input gradient; one thread per column for the parameter gradients.
#include <math.h>

#include "kernels.h"

namespace kaio_gpu {
namespace {

constexpr float kEps = 1e-5f;

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* in, const float* w,
                                         const float* b, int dim) {
  const float* x = in + (long)blockIdx.x * dim;
  float* y = out + (long)blockIdx.x * dim;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) sum += x[i];
  const float m = block_sum(sum) / dim;
  float var = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) var += (x[i] - m) * (x[i] - m);
  const float s = rsqrtf(block_sum(var) / dim + kEps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) y[i] = (x[i] - m) * s * w[i] + b[i];
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = m;
    rstd[blockIdx.x] = s;
  }
}

__global__ void layernorm_input_grad_kernel(float* din, const float* dout, const float* in, const float* w,
                                            const float* mean, const float* rstd, int dim) {
  const long at = (long)blockIdx.x * dim;
  const float m = mean[blockIdx.x], s = rstd[blockIdx.x];
  float a = 0.0f, c = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const float dxhat = dout[at + i] * w[i];
    a += dxhat;
    c += dxhat * (in[at + i] - m) * s;
  }
  a = block_sum(a) / dim;
  c = block_sum(c) / dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x)
    din[at + i] += s * (dout[at + i] * w[i] - a - (in[at + i] - m) * s * c);
}

__global__ void layernorm_param_grad_kernel(float* dw, float* db, const float* dout, const float* in, const float* mean,
                                            const float* rstd, int rows, int dim) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= dim) return;
  float gw = 0.0f, gb = 0.0f;
  for (int r = 0; r < rows; ++r) {
    const float dy = dout[(long)r * dim + i];
    gw += dy * (in[(long)r * dim + i] - mean[r]) * rstd[r];
    gb += dy;
  }
  dw[i] += gw;
  db[i] += gb;
}

}  // namespace
}  // namespace kaio_gpu

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(layernorm_forward)(float* out, float* mean, float* rstd, const float* in, const float* w,
                                              const float* b, int rows, int dim) {
  layernorm_forward_kernel<<<rows, 256, 0, compute_stream()>>>(out, mean, rstd, in, w, b, dim);
  return check_launch("layernorm_forward");
}

extern "C" int KAIO_GPU_FN(layernorm_backward)(float* din, float* dw, float* db, const float* dout, const float* in,
                                               const float* w, const float* mean, const float* rstd, int rows,
                                               int dim) {
  layernorm_input_grad_kernel<<<rows, 256, 0, compute_stream()>>>(din, dout, in, w, mean, rstd, dim);
  layernorm_param_grad_kernel<<<blocks_for(dim, 128), 128, 0, compute_stream()>>>(dw, db, dout, in, mean, rstd, rows,
                                                                                  dim);
  return check_launch("layernorm_backward");
}
