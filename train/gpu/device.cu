// Device discovery and a smoke kernel, so the build proves each vendor's
// toolchain works and a test can run something real on a GPU.
#include "vendor.h"
#include "gpu_api.h"

namespace {

__global__ void axpy_kernel(int n, float a, const float* x, float* y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += a * x[i];
}

}  // namespace

extern "C" int KAIO_GPU_FN(device_count)() {
  int n = 0;
  if (gpuGetDeviceCount(&n) != gpuSuccess) return 0;
  return n;
}

extern "C" int KAIO_GPU_FN(axpy_host)(int n, float a, const float* x, float* y) {
  float *dx = nullptr, *dy = nullptr;
  size_t bytes = static_cast<size_t>(n) * sizeof(float);
  if (gpuMalloc(&dx, bytes) != gpuSuccess) return -1;
  if (gpuMalloc(&dy, bytes) != gpuSuccess) {
    gpuFree(dx);
    return -1;
  }
  gpuMemcpy(dx, x, bytes, gpuMemcpyHostToDevice);
  gpuMemcpy(dy, y, bytes, gpuMemcpyHostToDevice);
  axpy_kernel<<<(n + 255) / 256, 256>>>(n, a, dx, dy);
  gpuError_t err = gpuMemcpy(y, dy, bytes, gpuMemcpyDeviceToHost);
  gpuFree(dx);
  gpuFree(dy);
  return err == gpuSuccess ? 0 : -1;
}
