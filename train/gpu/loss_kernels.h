#pragma once
// The masked MSE against per-tubelet-normalised targets, per element type:
// the masked-row count, one block per row, and the loss figure.
// Device code only: loss.cu launches it, and tests/train/ops_host_test.cpp
// runs it on the host (tests/train/host_shim.h).
#include <math.h>
#include <stdint.h>

#include "block_reduce.h"
#include "element.h"
#include "gpu_api.h"

namespace kaio_gpu {
namespace {

// counts[0] = the number of masked rows (exact in a float up to 2^24 rows).
__global__ void count_masked_kernel(float* counts, const uint8_t* mask, int rows) {
  float sum = 0.0f;
  for (int i = threadIdx.x; i < rows; i += blockDim.x) sum += mask[i] ? 1.0f : 0.0f;
  sum = block_sum(sum);
  if (threadIdx.x == 0) counts[0] = sum;
}

template <typename T>
__global__ void masked_mse_kernel(float* row_loss, T* dpred, const T* pred, const T* patches, const uint8_t* mask,
                                  int pd, const float* masked) {
  const long at = (long)blockIdx.x * pd;
  if (!mask[blockIdx.x]) {
    for (int i = threadIdx.x; i < pd; i += blockDim.x) dpred[at + i] = from_float<T>(0.0f);
    if (threadIdx.x == 0) row_loss[blockIdx.x] = 0.0f;
    return;
  }
  const float grad_scale = 2.0f / (*masked * pd);
  float sum = 0.0f;
  for (int i = threadIdx.x; i < pd; i += blockDim.x) sum += to_float(patches[at + i]);
  const float mean = block_sum(sum) / pd;
  float var = 0.0f;
  for (int i = threadIdx.x; i < pd; i += blockDim.x) {
    const float centred = to_float(patches[at + i]) - mean;
    var += centred * centred;
  }
  const float inv_std = rsqrtf(block_sum(var) / pd + 1e-6f);
  float err = 0.0f;
  for (int i = threadIdx.x; i < pd; i += blockDim.x) {
    const float diff = to_float(pred[at + i]) - (to_float(patches[at + i]) - mean) * inv_std;
    err += diff * diff;
    dpred[at + i] = from_float<T>(grad_scale * diff);
  }
  err = block_sum(err);
  if (threadIdx.x == 0) row_loss[blockIdx.x] = err;
}

__global__ void loss_figure_kernel(KaioStepFigures* figures, const float* counts, int rows, int pd) {
  const double total = block_sum_double(counts + 1, rows);
  if (threadIdx.x == 0) figures->loss = counts[0] > 0 ? total / ((double)counts[0] * pd) : 0.0;
}

}  // namespace
}  // namespace kaio_gpu
