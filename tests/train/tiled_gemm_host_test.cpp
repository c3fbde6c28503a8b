// The tiled GEMM kernel (train/gpu/tiled_gemm.h), every GPU thread a host
// thread (tests/train/host_shim.h), in each element-type combination gemm()
// is built for, on the products the model makes: a linear layer's forward
// (bias through beta = 1), its input and weight gradients (transposed A,
// accumulating), and attention's batched (sample, head) products over the
// packed qkv rows, all on sizes that are not multiples of the 16x16 tiles.
// Against the same product in double with the operands rounded to bf16
// where the kernel rounds them: an fp32 result within 1e-5 (max abs error
// over the largest reference value), a bf16 one within 4e-3 (half a bf16
// step is 2^-9). Outputs start as NaN where beta = 0, so an element no thread
// writes fails.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "tests/train/host_shim.h"
#include "train/gpu/tiled_gemm.h"
// After the shim and the kernels.
#include "tests/train/host_elements.h"

namespace {

using host_elements::random_values;
using host_elements::stored;
using kaio_gpu::Bf16;
using kaio_gpu::GemmBatch;

struct Product {
  std::string name;
  bool trans_a, trans_b;
  int m, n, k;
  float alpha, beta;
  int lda, ldb, ldc;
  size_t a_offset, b_offset;  // into the A and B arrays (attention reads K and V inside qkv)
  GemmBatch batch;
};

long start(const GemmBatch& g, int z, long outer, long inner) {
  return (z / g.inner) * outer + (z % g.inner) * inner;
}

// C in double: alpha op(A) op(B) + beta C, each operand rounded to bf16 when bf16.
std::vector<double> reference(const Product& p, const std::vector<float>& a, const std::vector<float>& b,
                              const std::vector<float>& c0, bool bf16, bool c_bf16) {
  auto op = [&](float x) { return double(bf16 ? kaio_gpu::round_bf16(x) : x); };
  std::vector<double> c(c0.begin(), c0.end());
  for (int z = 0; z < p.batch.count; ++z) {
    const long ab = long(p.a_offset) + start(p.batch, z, p.batch.a_outer, p.batch.a_inner),
               bb = long(p.b_offset) + start(p.batch, z, p.batch.b_outer, p.batch.b_inner),
               cb = start(p.batch, z, p.batch.c_outer, p.batch.c_inner);
    for (int i = 0; i < p.m; ++i)
      for (int j = 0; j < p.n; ++j) {
        double sum = 0;
        for (int kk = 0; kk < p.k; ++kk) {
          const double x = op(p.trans_a ? a[ab + long(kk) * p.lda + i] : a[ab + long(i) * p.lda + kk]);
          const double y = op(p.trans_b ? b[bb + long(j) * p.ldb + kk] : b[bb + long(kk) * p.ldb + j]);
          sum += x * y;
        }
        double& out = c[cb + long(i) * p.ldc + j];
        const double before = c_bf16 ? double(kaio_gpu::round_bf16(float(out))) : out;
        out = p.alpha * sum + (p.beta != 0.0f ? p.beta * before : 0.0);
      }
  }
  return c;
}

// gemm.cu's tiled_gemm launch: a 16x16 block per tile of C, the batch in z.
template <typename A, typename B, typename C>
std::vector<float> run(const Product& p, const std::vector<float>& a, const std::vector<float>& b,
                       const std::vector<float>& c0) {
  const std::vector<A> sa = stored<A>(a);
  const std::vector<B> sb = stored<B>(b);
  std::vector<C> sc = stored<C>(c0);
  const unsigned tile = kaio_gpu::kTile;
  host_shim::launch({(p.n + tile - 1) / tile, (p.m + tile - 1) / tile, unsigned(p.batch.count)}, {tile, tile, 1}, [&] {
    kaio_gpu::tiled_gemm_kernel<A, B, C>(p.trans_a, p.trans_b, p.m, p.n, p.k, p.alpha, sa.data() + p.a_offset, p.lda,
                                         sb.data() + p.b_offset, p.ldb, p.beta, sc.data(), p.ldc, p.batch);
  });
  std::vector<float> out(sc.size());
  for (size_t i = 0; i < sc.size(); ++i) out[i] = kaio_gpu::to_float(sc[i]);
  return out;
}

template <typename A, typename B, typename C>
void check(const Product& p, size_t a_size, size_t b_size, size_t c_size, unsigned seed) {
  constexpr bool bf16 = kaio_gpu::is_bf16<A> || kaio_gpu::is_bf16<B> || kaio_gpu::is_bf16<C>;
  const auto a = random_values(a_size, seed), b = random_values(b_size, seed + 1);
  const auto c0 = p.beta != 0.0f ? random_values(c_size, seed + 2) : std::vector<float>(c_size, NAN);
  const std::vector<float> got = run<A, B, C>(p, a, b, c0);
  const std::vector<double> want = reference(p, a, b, c0, bf16, kaio_gpu::is_bf16<C>);
  const double rel = host_elements::relative_error(got, want), tol = kaio_gpu::is_bf16<C> ? 4e-3 : 1e-5;
  std::printf("tiled gemm %-22s %s: max rel error %.3g\n", p.name.c_str(),
              bf16 ? (kaio_gpu::is_bf16<C> ? "bf16 -> bf16" : "bf16 -> fp32") : "fp32", rel);
  EXPECT_LT(rel, tol) << p.name << (bf16 ? " bf16" : " fp32");
}

}  // namespace

TEST(TrainTiledGemm, LinearLayerProductsOnHostMatchDouble) {
  const int rows = 37, in = 45, out = 19;
  const size_t x = size_t(rows) * in, w = size_t(out) * in, y = size_t(rows) * out;
  // out = in W^T + bias (C holds the bias: beta 1)
  const Product forward{"linear forward", false, true, rows, out, in, 1.0f, 1.0f, in, in, out, 0, 0, GemmBatch{}};
  check<float, float, float>(forward, x, w, y, 1);
  check<Bf16, float, Bf16>(forward, x, w, y, 1);
  // din = dout W
  const Product din{"linear din", false, false, rows, in, out, 1.0f, 0.0f, out, in, in, 0, 0, GemmBatch{}};
  check<float, float, float>(din, y, w, x, 2);
  check<Bf16, float, Bf16>(din, y, w, x, 2);
  // dW += dout^T in
  const Product dw{"linear dweight", true, false, out, in, rows, 1.0f, 1.0f, out, in, in, 0, 0, GemmBatch{}};
  check<float, float, float>(dw, y, x, w, 3);
  check<Bf16, Bf16, float>(dw, y, x, w, 3);
}

// attention.cu's forward products: scores = scale Q K^T per (sample, head)
// into [batch, heads, tokens, tokens], then out = P V into [batch, tokens, dim].
TEST(TrainTiledGemm, AttentionBatchedProductsOnHostMatchDouble) {
  const int b = 2, h = 3, n = 21, hd = 8, d = h * hd, ld = 3 * d, bh = b * h;
  const long qo = long(n) * ld, po = long(h) * n * n, pi = long(n) * n, oo = long(n) * d;
  const size_t qkv = size_t(b) * n * ld, probs = size_t(bh) * n * n, out = size_t(b) * n * d;
  const float scale = 1.0f / std::sqrt(float(hd));
  const Product scores{"attention scores",
                       false,
                       true,
                       n,
                       n,
                       hd,
                       scale,
                       0.0f,
                       ld,
                       ld,
                       n,
                       0,
                       size_t(d),
                       kaio_gpu::gemm_batch(bh, h, qo, hd, qo, hd, po, pi)};
  check<float, float, float>(scores, qkv, qkv, probs, 4);
  check<Bf16, Bf16, float>(scores, qkv, qkv, probs, 4);
  const Product values{"attention out",
                       false,
                       false,
                       n,
                       hd,
                       n,
                       1.0f,
                       0.0f,
                       n,
                       ld,
                       d,
                       0,
                       size_t(2 * d),
                       kaio_gpu::gemm_batch(bh, h, po, pi, qo, hd, oo, hd)};
  check<float, float, float>(values, probs, qkv, out, 5);
  check<float, Bf16, Bf16>(values, probs, qkv, out, 5);
}
