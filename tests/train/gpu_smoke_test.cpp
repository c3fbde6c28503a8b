// Runs the smoke kernel on each vendor's GPU that is present, checked against
// the same arithmetic on the CPU, checks that a build with the vendor BLAS
// runs its matrix products on it, and the fused attention forward against the
// naive one (the backward is checked in gpu_backend_test.cpp); reports
// "skipped" where there is none.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "gpu_api.h"
#include "train/bf16.h"

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

struct DeviceFree {
  const KaioGpuOps* ops;
  void operator()(void* ptr) const noexcept { ops->free_device(ptr); }
};
using DeviceBuffer = std::unique_ptr<void, DeviceFree>;

// Max abs difference over the largest reference value.
double relative_error(const std::vector<float>& want, const std::vector<float>& got) {
  double max_abs = 0, max_ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_abs = std::max(max_abs, std::abs(double(want[i]) - got[i]));
    max_ref = std::max(max_ref, std::abs(double(want[i])));
  }
  return max_abs / std::max(max_ref, 1e-12);
}

// Activations as the ops take them: fp32, or bf16 when bf16.
int put_activations(const KaioGpuOps* ops, void* dst, const std::vector<float>& values, int bf16) {
  if (!bf16) return ops->to_device(dst, values.data(), values.size() * sizeof(float));
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = kaio::train::bf16_bits(values[i]);
  return ops->to_device(dst, bits.data(), bits.size() * sizeof(uint16_t));
}
int get_activations(const KaioGpuOps* ops, std::vector<float>& values, const void* src, int bf16) {
  if (!bf16) return ops->to_host(values.data(), src, values.size() * sizeof(float));
  std::vector<uint16_t> bits(values.size());
  const int rc = ops->to_host(bits.data(), src, bits.size() * sizeof(uint16_t));
  for (size_t i = 0; i < values.size(); ++i) values[i] = kaio::train::bf16_value(bits[i]);
  return rc;
}

// The probabilities the fused forward implies, exp(scale q.k - lse) with q and
// k as the kernels read them (bf16-rounded when bf16), in the naive path's
// [batch, heads, tokens, tokens] layout.
std::vector<float> probs_from_lse(const std::vector<float>& qkv, const std::vector<float>& lse, int batch, int tokens,
                                  int heads, int head_dim, bool bf16) {
  const size_t d = static_cast<size_t>(heads) * head_dim, ld = 3 * d;
  const double scale = 1.0 / std::sqrt(double(head_dim));
  auto at = [&](int b, int row, size_t col) {
    const float x = qkv[(static_cast<size_t>(b) * tokens + row) * ld + col];
    return double(bf16 ? kaio::train::bf16_value(kaio::train::bf16_bits(x)) : x);
  };
  std::vector<float> probs(static_cast<size_t>(batch) * heads * tokens * tokens);
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < tokens; ++i) {
        const size_t row = (static_cast<size_t>(b) * heads + h) * tokens + i, q_col = static_cast<size_t>(h) * head_dim;
        for (int j = 0; j < tokens; ++j) {
          double s = 0;
          for (int c = 0; c < head_dim; ++c) s += at(b, i, q_col + c) * at(b, j, d + q_col + c);
          probs[row * tokens + j] = static_cast<float>(std::exp(s * scale - lse[row]));
        }
      }
  return probs;
}

// The fused forward against the naive path, in fp32 (1e-4) and bf16 (2e-2), on
// odd token counts and every head width the fused kernels are built for: the
// output, and the probabilities its saved log-sum-exp implies (what the fused
// backward recomputes) against the naive path's.
[[maybe_unused]] void check_fused_attention(const KaioGpuOps* ops) {
  ASSERT_EQ(ops->init(), 0) << ops->last_error();
  struct Shape {
    int batch, tokens, heads, head_dim;
  };
  for (const Shape& s :
       {Shape{1, 1, 1, 16}, Shape{2, 37, 3, 16}, Shape{3, 53, 5, 32}, Shape{2, 197, 6, 64}, Shape{1, 70, 2, 128}}) {
    ASSERT_TRUE(ops->attention_fused_supports(s.head_dim)) << s.head_dim;
    const size_t d = static_cast<size_t>(s.heads) * s.head_dim, rows = static_cast<size_t>(s.batch) * s.tokens;
    const size_t probs_n = static_cast<size_t>(s.batch) * s.heads * s.tokens * s.tokens,
                 lse_n = static_cast<size_t>(s.batch) * s.heads * s.tokens;
    std::vector<float> qkv(rows * 3 * d);
    std::mt19937 rng(s.tokens);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& x : qkv) x = normal(rng);
    auto buffer = [&](size_t floats) { return DeviceBuffer(ops->malloc_device(floats * sizeof(float)), {ops}); };
    DeviceBuffer dqkv = buffer(qkv.size()), out[2] = {buffer(rows * d), buffer(rows * d)}, probs = buffer(probs_n),
                 lse = buffer(lse_n);
    for (int bf16 : {0, 1}) {
      ASSERT_EQ(put_activations(ops, dqkv.get(), qkv, bf16), 0) << ops->last_error();
      ASSERT_EQ(ops->attention_forward(out[0].get(), static_cast<float*>(probs.get()), dqkv.get(), s.batch, s.tokens,
                                       s.heads, s.head_dim, bf16),
                0)
          << ops->last_error();
      ASSERT_EQ(ops->attention_forward_fused(out[1].get(), static_cast<float*>(lse.get()), dqkv.get(), s.batch,
                                             s.tokens, s.heads, s.head_dim, bf16),
                0)
          << ops->last_error();
      std::vector<float> o[2] = {std::vector<float>(rows * d), std::vector<float>(rows * d)};
      std::vector<float> naive_probs(probs_n), lse_host(lse_n);
      for (int k = 0; k < 2; ++k) ASSERT_EQ(get_activations(ops, o[k], out[k].get(), bf16), 0) << ops->last_error();
      ASSERT_EQ(ops->to_host(naive_probs.data(), probs.get(), probs_n * sizeof(float)), 0) << ops->last_error();
      ASSERT_EQ(ops->to_host(lse_host.data(), lse.get(), lse_n * sizeof(float)), 0) << ops->last_error();
      const double tol = bf16 ? 2e-2 : 1e-4, out_err = relative_error(o[0], o[1]),
                   probs_err = relative_error(
                       naive_probs, probs_from_lse(qkv, lse_host, s.batch, s.tokens, s.heads, s.head_dim, bf16));
      std::printf("fused attention %dx%dx%dx%d %s: out rel error %.3g, probs (from lse) rel error %.3g\n", s.batch,
                  s.tokens, s.heads, s.head_dim, bf16 ? "bf16" : "fp32", out_err, probs_err);
      EXPECT_LT(out_err, tol) << s.tokens << " tokens, head width " << s.head_dim;
      EXPECT_LT(probs_err, tol) << s.tokens << " tokens, head width " << s.head_dim;
    }
  }
  EXPECT_FALSE(ops->attention_fused_supports(24));
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

TEST(GpuSmoke, HipMatrixProductsRunOnRocblas) {
#if defined(KAIO_HAVE_HIP) && defined(KAIO_HAVE_ROCBLAS)
  if (kaio_hip_device_count() == 0) GTEST_SKIP() << "skipped: no GPU (no HIP device)";
  const KaioGpuOps* ops = kaio_hip_ops();
  ASSERT_EQ(ops->init(), 0) << ops->last_error();
  std::printf("hip device %s: matrix products on %s\n", ops->device_name(), ops->gemm_engine());
  EXPECT_STREQ(ops->gemm_engine(), "rocBLAS");
#else
  GTEST_SKIP() << "skipped: built without HIP or rocBLAS";
#endif
}

TEST(GpuSmoke, HipFusedAttentionMatchesTheNaivePath) {
#ifdef KAIO_HAVE_HIP
  if (kaio_hip_device_count() == 0) GTEST_SKIP() << "skipped: no GPU (no HIP device)";
  check_fused_attention(kaio_hip_ops());
#else
  GTEST_SKIP() << "skipped: built without HIP";
#endif
}

TEST(GpuSmoke, CudaFusedAttentionMatchesTheNaivePath) {
#ifdef KAIO_HAVE_CUDA
  if (kaio_cuda_device_count() == 0) GTEST_SKIP() << "skipped: no GPU (no CUDA device)";
  check_fused_attention(kaio_cuda_ops());
#else
  GTEST_SKIP() << "skipped: built without CUDA";
#endif
}
