// Masked MSE against per-tubelet-normalised targets: one block counts the
// masked rows, one block per row writes its squared-error sum, and the rows
// are added in double (on the host for masked_mse, on the device for
// masked_mse_figures, which never waits for the host).
#include <math.h>

#include <vector>

#include "kernels.h"

// After kernels.h, which names the namespace per vendor.
#include "loss_kernels.h"

namespace kaio_gpu {
namespace {

// Queues the count and the rows: returns scratch with the masked-row count at
// [0] and the rows' squared-error sums at [1, rows], or null on failure.
template <typename T>
const float* masked_rows(T* dpred, const T* pred, const T* patches, const uint8_t* mask, int rows, int pd) {
  float* counts = scratch(static_cast<size_t>(rows) + 1);
  if (!counts) return nullptr;
  count_masked_kernel<<<1, 256, 0, compute_stream()>>>(counts, mask, rows);
  if (check_launch("masked_mse count")) return nullptr;
  masked_mse_kernel<<<rows, 128, 0, compute_stream()>>>(counts + 1, dpred, pred, patches, mask, pd, counts);
  return check_launch("masked_mse") ? nullptr : counts;
}

}  // namespace
}  // namespace kaio_gpu

using namespace kaio_gpu;

namespace {
// masked_rows for activations of either type.
const float* masked_rows_of(void* dpred, const void* pred, const void* patches, const uint8_t* mask, int rows, int pd,
                            int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return masked_rows(as<T>(dpred), as<T>(pred), as<T>(patches), mask, rows, pd);
  });
}
}  // namespace

extern "C" int KAIO_GPU_FN(masked_mse)(double* loss_host, void* dpred, const void* pred, const void* patches,
                                       const uint8_t* mask, int rows, int pd, int bf16) {
  const float* counts = masked_rows_of(dpred, pred, patches, mask, rows, pd, bf16);
  if (!counts) return -1;
  std::vector<float> host(static_cast<size_t>(rows) + 1);
  if (check(gpuMemcpyAsync(host.data(), counts, host.size() * sizeof(float), gpuMemcpyDeviceToHost, compute_stream()),
            "loss readback") ||
      check(gpuStreamSynchronize(compute_stream()), "loss readback"))
    return -1;
  double total = 0.0;
  for (size_t i = 1; i < host.size(); ++i) total += host[i];
  *loss_host = host[0] > 0 ? total / ((double)host[0] * pd) : 0.0;
  return 0;
}

extern "C" int KAIO_GPU_FN(masked_mse_figures)(KaioStepFigures* figures, void* dpred, const void* pred,
                                               const void* patches, const uint8_t* mask, int rows, int pd, int bf16) {
  const float* counts = masked_rows_of(dpred, pred, patches, mask, rows, pd, bf16);
  if (!counts) return -1;
  loss_figure_kernel<<<1, kSumThreads, 0, compute_stream()>>>(figures, counts, rows, pd);
  return check_launch("masked_mse loss");
}
