// Sum of squares (for the gradient norm): per-block partial sums, added on the
// host in double.
#include <vector>

#include "kernels.h"

namespace kaio_gpu {
namespace {

constexpr unsigned kBlocks = 256, kThreads = 256;

__global__ void sum_squares_kernel(float* partial, const float* x, size_t n) {
  float acc = 0.0f;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    acc += x[i] * x[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

}  // namespace
}  // namespace kaio_gpu

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(sum_squares)(double* result_host, const float* x, size_t n) {
  float* partial = scratch(kBlocks);
  if (!partial) return -1;
  sum_squares_kernel<<<kBlocks, kThreads, 0, compute_stream()>>>(partial, x, n);
  if (check_launch("sum_squares")) return -1;
  std::vector<float> host(kBlocks);
  if (check(gpuMemcpyAsync(host.data(), partial, kBlocks * sizeof(float), gpuMemcpyDeviceToHost, compute_stream()),
            "sum_squares readback") ||
      check(gpuStreamSynchronize(compute_stream()), "sum_squares readback"))
    return -1;
  double total = 0.0;
  for (float v : host) total += v;
  *result_host = total;
  return 0;
}
