// Runs the smoke kernel on each vendor's GPU that is present, checked against
// the same arithmetic on the CPU, and checks that a build with the vendor
// BLAS runs its matrix products on it; reports "skipped" where there is none.
#include <gtest/gtest.h>

#include <cstdio>
#include <vector>

#include "gpu_api.h"

namespace {

[[maybe_unused]] void check_axpy(int (*axpy)(int, float, const float*, float*)) {
  std::vector<float> x(1000), y(1000), want(1000);
  for (int i = 0; i < 1000; ++i) {
    x[i] = 0.5f * i;
    y[i] = 1.0f - i;
    want[i] = y[i] + 3.0f * x[i];
  }
  ASSERT_EQ(axpy(1000, 3.0f, x.data(), y.data()), 0);
  for (int i = 0; i < 1000; ++i) ASSERT_FLOAT_EQ(y[i], want[i]) << i;
}

}  // namespace

TEST(GpuSmoke, HipAxpyMatchesCpu) {
#ifdef KAIO_HAVE_HIP
  if (kaio_hip_device_count() == 0) GTEST_SKIP() << "skipped: no HIP device";
  check_axpy(kaio_hip_axpy_host);
#else
  GTEST_SKIP() << "skipped: built without HIP";
#endif
}

TEST(GpuSmoke, CudaAxpyMatchesCpu) {
#ifdef KAIO_HAVE_CUDA
  if (kaio_cuda_device_count() == 0) GTEST_SKIP() << "skipped: no CUDA device";
  check_axpy(kaio_cuda_axpy_host);
#else
  GTEST_SKIP() << "skipped: built without CUDA";
#endif
}

TEST(GpuSmoke, CudaMatrixProductsRunOnCublas) {
#if defined(KAIO_HAVE_CUDA) && defined(KAIO_HAVE_CUBLAS)
  if (kaio_cuda_device_count() == 0) GTEST_SKIP() << "skipped: no GPU (no CUDA device)";
  const KaioGpuOps* ops = kaio_cuda_ops();
  ASSERT_EQ(ops->init(), 0) << ops->last_error();
  std::printf("cuda device %s: matrix products on %s\n", ops->device_name(), ops->gemm_engine());
  EXPECT_STREQ(ops->gemm_engine(), "cuBLAS");
#else
  GTEST_SKIP() << "skipped: built without CUDA or cuBLAS";
#endif
}
