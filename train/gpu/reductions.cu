// Sum of squares (for the gradient norm): per-block partial sums, added in
// double on the host (sum_squares) or on the device with the clip factor and
// finiteness of the step (grad_figures, no host wait).
#include <math.h>

#include <vector>

#include "kernels.h"

// After kernels.h, which names the namespace per vendor.
#include "reductions_kernels.h"

namespace kaio_gpu {
namespace {

// Queues the partial sums into scratch; null on failure.
const float* partial_sums(const float* x, size_t n) {
  float* partial = scratch(kBlocks);
  if (!partial) return nullptr;
  sum_squares_kernel<<<kBlocks, kThreads, 0, compute_stream()>>>(partial, x, n);
  return check_launch("sum_squares") ? nullptr : partial;
}

}  // namespace
}  // namespace kaio_gpu

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(sum_squares)(double* result_host, const float* x, size_t n) {
  const float* partial = partial_sums(x, n);
  if (!partial) return -1;
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

extern "C" int KAIO_GPU_FN(grad_figures)(KaioStepFigures* figures, const float* grad, size_t n, double max_norm) {
  const float* partial = partial_sums(grad, n);
  if (!partial) return -1;
  grad_figures_kernel<<<1, kSumThreads, 0, compute_stream()>>>(figures, partial, max_norm);
  return check_launch("grad_figures");
}
