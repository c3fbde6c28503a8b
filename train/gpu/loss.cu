// Masked MSE against per-tubelet-normalised targets: one block per row writes
// its squared-error sum; the host adds the rows in double.
#include <math.h>

#include <vector>

#include "kernels.h"

namespace kaio_gpu {
namespace {

__global__ void masked_mse_kernel(float* row_loss, float* dpred, const float* pred, const float* patches,
                                  const uint8_t* mask, int pd, float grad_scale) {
  const long at = (long)blockIdx.x * pd;
  if (!mask[blockIdx.x]) {
    for (int i = threadIdx.x; i < pd; i += blockDim.x) dpred[at + i] = 0.0f;
    if (threadIdx.x == 0) row_loss[blockIdx.x] = 0.0f;
    return;
  }
  float sum = 0.0f;
  for (int i = threadIdx.x; i < pd; i += blockDim.x) sum += patches[at + i];
  const float mean = block_sum(sum) / pd;
  float var = 0.0f;
  for (int i = threadIdx.x; i < pd; i += blockDim.x) var += (patches[at + i] - mean) * (patches[at + i] - mean);
  const float inv_std = rsqrtf(block_sum(var) / pd + 1e-6f);
  float err = 0.0f;
  for (int i = threadIdx.x; i < pd; i += blockDim.x) {
    const float diff = pred[at + i] - (patches[at + i] - mean) * inv_std;
    err += diff * diff;
    dpred[at + i] = grad_scale * diff;
  }
  err = block_sum(err);
  if (threadIdx.x == 0) row_loss[blockIdx.x] = err;
}

}  // namespace
}  // namespace kaio_gpu

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(masked_mse)(double* loss_host, float* dpred, const float* pred, const float* patches,
                                       const uint8_t* mask, int rows, int pd) {
  std::vector<uint8_t> host_mask(rows);
  if (check(gpuMemcpyAsync(host_mask.data(), mask, rows, gpuMemcpyDeviceToHost, compute_stream()), "mask readback") ||
      check(gpuStreamSynchronize(compute_stream()), "mask readback"))
    return -1;
  long masked = 0;
  for (uint8_t m : host_mask) masked += m ? 1 : 0;
  const float grad_scale = masked ? 2.0f / ((float)masked * pd) : 0.0f;
  float* row_loss = scratch(rows);
  if (!row_loss) return -1;
  masked_mse_kernel<<<rows, 128, 0, compute_stream()>>>(row_loss, dpred, pred, patches, mask, pd, grad_scale);
  if (check_launch("masked_mse")) return -1;
  std::vector<float> host(rows);
  if (check(gpuMemcpyAsync(host.data(), row_loss, rows * sizeof(float), gpuMemcpyDeviceToHost, compute_stream()),
            "loss readback") ||
      check(gpuStreamSynchronize(compute_stream()), "loss readback"))
    return -1;
  double total = 0.0;
  for (float v : host) total += v;
  *loss_host = masked ? total / ((double)masked * pd) : 0.0;
  return 0;
}
