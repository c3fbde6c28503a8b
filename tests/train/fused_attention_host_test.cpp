// The fused attention kernels (train/gpu/fused_attention.h) run on the host
// (tests/train/host_shim.h). The forward, row dots and both backward kernels
// must match attention computed in double on odd token counts (not multiples
// of the 32-row tiles or 64-row blocks) and every head width they are built
// for: fp32 within 1e-4, bf16 within 2e-2 (max abs error over the largest
// reference value). Outputs start as NaN, so an element no thread writes
// fails. bf16 runs the kernels as kaiod runs them with train.bf16:
// activations stored as bf16 (element.h's Bf16), in and out.
#include <gtest/gtest.h>
#include <math.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "tests/train/host_shim.h"
#include "train/bf16.h"
#include "train/gpu/fused_attention.h"
// After the shim and the kernels.
#include "tests/train/host_elements.h"

namespace {

using namespace kaio_gpu::fused_attention;
using host_elements::loaded;
using host_elements::relative_error;
using host_elements::stored;

// A launch of `threads` threads a block over a grid_x by grid_y grid.
void launch(unsigned grid_x, unsigned grid_y, unsigned threads, const std::function<void()>& kernel) {
  host_shim::launch({grid_x, grid_y, 1}, {threads, 1, 1}, kernel);
}

struct Shape {
  int batch, tokens, heads;
};

struct Results {
  std::vector<double> out, lse, dqkv;
};

// Attention forward and backward in double: out, lse, dqkv (dq, dk, dv in qkv's layout).
Results reference(const std::vector<float>& qkv, const std::vector<float>& dout, const Shape& s, int hd) {
  const int n = s.tokens;
  const size_t d = size_t(s.heads) * hd, ld = 3 * d;
  const double scale = 1.0 / std::sqrt(double(hd));
  Results r{std::vector<double>(dout.size()), std::vector<double>(size_t(s.batch) * s.heads * n),
            std::vector<double>(qkv.size())};
  std::vector<double> p(size_t(n) * n), ds(size_t(n) * n);
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < s.heads; ++h) {
      const size_t col = size_t(h) * hd;
      auto in = [&](int row, int part, int c) { return double(qkv[(size_t(b) * n + row) * ld + part * d + col + c]); };
      auto grad = [&](int row, int c) { return double(dout[(size_t(b) * n + row) * d + col + c]); };
      for (int i = 0; i < n; ++i) {
        double top = -INFINITY, sum = 0, row_dot = 0;
        for (int j = 0; j < n; ++j) {
          double dot = 0;
          for (int c = 0; c < hd; ++c) dot += in(i, 0, c) * in(j, 1, c);
          p[size_t(i) * n + j] = dot * scale;
          top = std::max(top, dot * scale);
        }
        for (int j = 0; j < n; ++j) sum += std::exp(p[size_t(i) * n + j] - top);
        r.lse[(size_t(b) * s.heads + h) * n + i] = top + std::log(sum);
        for (int j = 0; j < n; ++j) p[size_t(i) * n + j] = std::exp(p[size_t(i) * n + j] - top) / sum;
        for (int c = 0; c < hd; ++c) {
          double o = 0;
          for (int j = 0; j < n; ++j) o += p[size_t(i) * n + j] * in(j, 2, c);
          r.out[(size_t(b) * n + i) * d + col + c] = o;
        }
        std::vector<double> dp(n);
        for (int j = 0; j < n; ++j) {
          for (int c = 0; c < hd; ++c) dp[j] += grad(i, c) * in(j, 2, c);
          row_dot += dp[j] * p[size_t(i) * n + j];
        }
        for (int j = 0; j < n; ++j) ds[size_t(i) * n + j] = p[size_t(i) * n + j] * (dp[j] - row_dot);
      }
      for (int i = 0; i < n; ++i)
        for (int c = 0; c < hd; ++c) {
          double dq = 0, dk = 0, dv = 0;
          for (int j = 0; j < n; ++j) {
            dq += ds[size_t(i) * n + j] * in(j, 1, c);
            dk += ds[size_t(j) * n + i] * in(j, 0, c);
            dv += p[size_t(j) * n + i] * grad(j, c);
          }
          const size_t at = (size_t(b) * n + i) * ld + col + c;
          r.dqkv[at] = dq * scale;
          r.dqkv[at + d] = dk * scale;
          r.dqkv[at + 2 * d] = dv;
        }
    }
  return r;
}

// The launches of attention.cu's launch_fused_forward and launch_fused_backward
// with activations of type T; returns out, lse and dqkv.
template <int HD, typename T>
std::vector<std::vector<float>> run_kernels(const std::vector<float>& qkv_values, const std::vector<float>& dout_values,
                                            const Shape& s) {
  const int n = s.tokens, d = s.heads * HD;
  const size_t rows = size_t(s.batch) * n, per_row = size_t(s.batch) * s.heads * n;
  const float scale = 1.0f / std::sqrt(float(HD));
  const unsigned grid_x = unsigned((n + kRowsPerBlock - 1) / kRowsPerBlock), grid_y = unsigned(s.batch * s.heads);
  const std::vector<T> qkv = stored<T>(qkv_values), dout = stored<T>(dout_values);
  std::vector<T> out = stored<T>(std::vector<float>(rows * d, NAN)),
                 dqkv = stored<T>(std::vector<float>(qkv.size(), NAN));
  std::vector<float> lse(per_row, NAN), row_dots(per_row, NAN);
  launch(grid_x, grid_y, kRowsPerBlock,
         [&] { fused_forward_kernel<HD>(out.data(), lse.data(), qkv.data(), n, s.heads, scale); });
  launch(unsigned((per_row + 255) / 256), 1, 256,
         [&] { row_dots_kernel<HD>(row_dots.data(), dout.data(), out.data(), n, s.heads, long(per_row)); });
  launch(grid_x, grid_y, kRowsPerBlock, [&] {
    fused_backward_keys_kernel<HD>(dqkv.data(), dout.data(), qkv.data(), lse.data(), row_dots.data(), n, s.heads,
                                   scale);
  });
  launch(grid_x, grid_y, kRowsPerBlock, [&] {
    fused_backward_queries_kernel<HD>(dqkv.data(), dout.data(), qkv.data(), lse.data(), row_dots.data(), n, s.heads,
                                      scale);
  });
  return {loaded(out), lse, loaded(dqkv)};
}

template <int HD>
void check(const Shape& s) {
  const int n = s.tokens, d = s.heads * HD;
  const size_t rows = size_t(s.batch) * n;
  std::mt19937 rng(n * 131 + HD);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> qkv(rows * 3 * d), dout(rows * d);
  for (float& x : qkv) x = normal(rng);
  for (float& x : dout) x = normal(rng);
  const Results want = reference(qkv, dout, s, HD);
  for (bool bf16 : {false, true}) {
    const auto got = bf16 ? run_kernels<HD, kaio_gpu::Bf16>(qkv, dout, s) : run_kernels<HD, float>(qkv, dout, s);
    const std::vector<float>&out = got[0], &lse = got[1], &dqkv = got[2];
    const double tol = bf16 ? 2e-2 : 1e-4;
    const double out_err = relative_error(out, want.out), lse_err = relative_error(lse, want.lse),
                 grad_err = relative_error(dqkv, want.dqkv);
    std::printf("fused attention %dx%dx%dx%d %s: out %.3g, lse %.3g, dqkv %.3g\n", s.batch, n, s.heads, HD,
                bf16 ? "bf16" : "fp32", out_err, lse_err, grad_err);
    EXPECT_LT(out_err, tol) << n << " tokens, head width " << HD << (bf16 ? " bf16" : " fp32");
    EXPECT_LT(lse_err, tol) << n << " tokens, head width " << HD << (bf16 ? " bf16" : " fp32");
    EXPECT_LT(grad_err, tol) << n << " tokens, head width " << HD << (bf16 ? " bf16" : " fp32");
  }
}

}  // namespace

TEST(TrainFusedAttention, KernelsOnHostMatchDoubleReferenceOnOddShapes) {
  check<16>({1, 1, 1});
  check<16>({1, 5, 1});
  check<16>({2, 37, 3});
  check<32>({3, 53, 5});
  check<64>({2, 65, 2});
  check<64>({1, 197, 2});
  check<128>({1, 70, 2});
}

// The host's bf16 conversion (train/bf16.h: what the GPU backends upload and
// read back) and the kernels' (element.h) agree on every value: ties to
// even, overflow to infinity, subnormals, infinities and NaNs; and a value
// goes back to the fp32 it stands for.
TEST(TrainBf16, HostAndKernelConversionsAgree) {
  std::vector<uint32_t> patterns = {0x00000000u, 0x80000000u, 0x3f808000u, 0x3f818000u, 0x3f80ffffu,
                                    0x7f7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
                                    0xff800001u, 0x00000001u, 0x00008000u, 0x00018000u, 0x807fffffu};
  std::mt19937 rng(2026);
  for (int i = 0; i < 200000; ++i) patterns.push_back(static_cast<uint32_t>(rng()));
  for (uint32_t u : patterns) {
    const float x = __uint_as_float(u);
    const uint16_t host = kaio::train::bf16_bits(x);
    ASSERT_EQ(host, kaio_gpu::bf16_of(x).bits) << std::hex << u;
    ASSERT_EQ(__float_as_uint(kaio::train::bf16_value(host)), __float_as_uint(kaio_gpu::to_float(kaio_gpu::Bf16{host})))
        << std::hex << u;
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(kaio::train::bf16_value(host))) << std::hex << u;
    } else {
      // Nearest: no other bf16 is closer (an overflow past the largest bf16 rounds to infinity).
      const double got = kaio::train::bf16_value(host), err = std::abs(got - double(x));
      if (std::isfinite(got)) {
        const double up = kaio::train::bf16_value(static_cast<uint16_t>(host + 1)),
                     down = kaio::train::bf16_value(static_cast<uint16_t>(host - 1));
        if (std::isfinite(up)) {
          EXPECT_LE(err, std::abs(up - double(x))) << std::hex << u;
        }
        if (std::isfinite(down)) {
          EXPECT_LE(err, std::abs(down - double(x))) << std::hex << u;
        }
      }
    }
  }
  EXPECT_EQ(kaio::train::bf16_bits(1.00390625f), 0x3f80) << "a tie goes to the even neighbour";
  EXPECT_EQ(kaio::train::bf16_bits(1.01171875f), 0x3f82) << "a tie goes to the even neighbour";
  EXPECT_EQ(kaio::train::bf16_bits(3.4e38f), 0x7f80) << "past the largest bf16: infinity";
}
