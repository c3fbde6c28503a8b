// The linear layer (bias, tiled GEMM, bias gradient), element-wise,
// normalisation, loss, embedding, softmax, AdamW and gradient-norm kernels
// (train/gpu/*_kernels.h), every GPU thread a host thread
// (tests/train/host_shim.h, warp shuffles included), launched as the .cu
// entry points launch them, against the cpu backend's layers on sizes that
// are not multiples of the blocks: fp32 within 1e-5 and bf16 activations
// (element.h's Bf16, in and out) within 2e-2 (max abs error over the largest
// cpu value). Outputs start as NaN where a kernel overwrites them, so an
// element no thread writes fails.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "tests/train/host_shim.h"
#include "train/gpu/adamw_kernels.h"
#include "train/gpu/embed_kernels.h"
#include "train/gpu/gelu_kernels.h"
#include "train/gpu/layernorm_kernels.h"
#include "train/gpu/linear_kernels.h"
#include "train/gpu/loss_kernels.h"
#include "train/gpu/reductions_kernels.h"
#include "train/gpu/softmax_kernels.h"
#include "train/gpu/tiled_gemm.h"
#include "train/layers/adamw.h"
#include "train/layers/gelu.h"
#include "train/layers/layernorm.h"
#include "train/layers/linear.h"
#include "train/layers/masked_mse.h"
#include "train/layers/tubelet_embed.h"
// After the shim and the kernels.
#include "tests/train/host_elements.h"

namespace {

using host_elements::loaded;
using host_elements::random_values;
using host_elements::stored;
using kaio_gpu::Bf16;

std::vector<float> nans(size_t n) {
  return std::vector<float>(n, NAN);
}

unsigned blocks(size_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

template <typename T>
const char* type_name() {
  return kaio_gpu::is_bf16<T> ? "bf16" : "fp32";
}

template <typename T>
void expect_close(const std::string& what, const std::vector<float>& want, const std::vector<float>& got) {
  ASSERT_EQ(want.size(), got.size()) << what;
  const double rel = host_elements::relative_error(got, want), tol = kaio_gpu::is_bf16<T> ? 2e-2 : 1e-5;
  std::printf("%-24s %s: max rel error %.3g\n", what.c_str(), type_name<T>(), rel);
  EXPECT_LT(rel, tol) << what << " " << type_name<T>();
}

// gelu.cu: GELU forward and backward and the add, 256 threads a block.
template <typename T>
void check_gelu_and_add() {
  const size_t n = 3001;
  const auto x = random_values(n, 1), dy = random_values(n, 2), other = random_values(n, 3);
  const auto in = stored<T>(x), grad = stored<T>(dy), b = stored<T>(other);
  auto y = stored<T>(nans(n)), dx = stored<T>(nans(n)), sum = stored<T>(nans(n));
  host_shim::launch({blocks(n, 256)}, {256}, [&] { kaio_gpu::gelu_forward_kernel(y.data(), in.data(), n); });
  host_shim::launch({blocks(n, 256)}, {256},
                    [&] { kaio_gpu::gelu_backward_kernel(dx.data(), grad.data(), in.data(), n); });
  host_shim::launch({blocks(n, 256)}, {256}, [&] { kaio_gpu::add_kernel(sum.data(), in.data(), b.data(), n); });
  std::vector<float> want_y(n), want_dx(n), want_sum(n);
  kaio::train::cpu::gelu_forward(want_y.data(), x.data(), n);
  kaio::train::cpu::gelu_backward(want_dx.data(), dy.data(), x.data(), n);
  for (size_t i = 0; i < n; ++i) want_sum[i] = x[i] + other[i];
  expect_close<T>("gelu forward", want_y, loaded(y));
  expect_close<T>("gelu backward", want_dx, loaded(dx));
  expect_close<T>("add", want_sum, loaded(sum));
}

// layernorm.cu: a block of 256 per row forward and for the input gradient
// (which accumulates), 128 threads per block of columns for the weights'.
template <typename T>
void check_layernorm() {
  const int rows = 37, dim = 97;
  const size_t n = size_t(rows) * dim;
  const auto x = random_values(n, 4), w = random_values(dim, 5), b = random_values(dim, 6), dy = random_values(n, 7),
             din0 = random_values(n, 8);
  const auto in = stored<T>(x), grad = stored<T>(dy);
  auto y = stored<T>(nans(n)), din = stored<T>(din0);
  std::vector<float> mean(rows, NAN), rstd(rows, NAN), dw(dim, 0.0f), db(dim, 0.0f);
  host_shim::launch({unsigned(rows)}, {256}, [&] {
    kaio_gpu::layernorm_forward_kernel(y.data(), mean.data(), rstd.data(), in.data(), w.data(), b.data(), dim);
  });
  host_shim::launch({unsigned(rows)}, {256}, [&] {
    kaio_gpu::layernorm_input_grad_kernel(din.data(), grad.data(), in.data(), w.data(), mean.data(), rstd.data(), dim);
  });
  host_shim::launch({blocks(dim, 128)}, {128}, [&] {
    kaio_gpu::layernorm_param_grad_kernel(dw.data(), db.data(), grad.data(), in.data(), mean.data(), rstd.data(), rows,
                                          dim);
  });
  // The cpu layer on the values the kernels read (bf16-rounded inputs under bf16).
  const auto x_read = loaded(in), dy_read = loaded(grad);
  std::vector<float> want_y(n), want_mean(rows), want_rstd(rows), want_din = loaded(stored<T>(din0)),
                                                                  want_dw(dim, 0.0f), want_db(dim, 0.0f);
  kaio::train::cpu::layernorm_forward(want_y.data(), want_mean.data(), want_rstd.data(), x_read.data(), w.data(),
                                      b.data(), rows, dim);
  kaio::train::cpu::layernorm_backward(want_din.data(), want_dw.data(), want_db.data(), dy_read.data(), x_read.data(),
                                       w.data(), want_mean.data(), want_rstd.data(), rows, dim);
  expect_close<T>("layernorm out", want_y, loaded(y));
  expect_close<float>("layernorm mean", want_mean, mean);
  expect_close<float>("layernorm rstd", want_rstd, rstd);
  expect_close<T>("layernorm din (+=)", want_din, loaded(din));
  expect_close<float>("layernorm dweight", want_dw, dw);
  expect_close<float>("layernorm dbias", want_db, db);
}

// loss.cu's masked_rows and the loss figure: the count (one block), one block
// of 128 per row, the rows' sum in double.
template <typename T>
void check_masked_mse() {
  const int rows = 41, pd = 75;
  const size_t n = size_t(rows) * pd;
  const auto pred_values = random_values(n, 9), patch_values = random_values(n, 10);
  std::vector<uint8_t> mask(rows);
  for (int r = 0; r < rows; ++r) mask[r] = r % 3 != 0;
  const auto pred = stored<T>(pred_values), patches = stored<T>(patch_values);
  auto dpred = stored<T>(nans(n));
  std::vector<float> counts(rows + 1, NAN);
  KaioStepFigures figures{NAN, 0, 1, 0};
  host_shim::launch({1}, {256}, [&] { kaio_gpu::count_masked_kernel(counts.data(), mask.data(), rows); });
  host_shim::launch({unsigned(rows)}, {128}, [&] {
    kaio_gpu::masked_mse_kernel(counts.data() + 1, dpred.data(), pred.data(), patches.data(), mask.data(), pd,
                                counts.data());
  });
  host_shim::launch({1}, {kaio_gpu::kSumThreads},
                    [&] { kaio_gpu::loss_figure_kernel(&figures, counts.data(), rows, pd); });
  const auto pred_read = loaded(pred), patches_read = loaded(patches);
  std::vector<float> want_dpred(n);
  const double want = kaio::train::cpu::masked_mse_forward_backward(want_dpred.data(), pred_read.data(),
                                                                    patches_read.data(), mask.data(), rows, pd);
  expect_close<T>("masked_mse dpred", want_dpred, loaded(dpred));
  std::printf("masked_mse loss %s: cpu %.8f, kernels %.8f\n", type_name<T>(), want, figures.loss);
  EXPECT_LT(std::abs(figures.loss - want) / want, 1e-5) << type_name<T>();
}

// embed.cu: patchify, the combine forward and backward (256 threads) and the
// mask token's gradient (64 threads).
template <typename T>
void check_embed() {
  const kaio::train::TubeletGrid grid{4, 24, 2, 8};
  const int batch = 2, tokens = grid.tokens(), dim = 13, pd = grid.patch_dim();
  std::vector<uint8_t> windows(batch * grid.window_bytes());
  for (size_t i = 0; i < windows.size(); ++i) windows[i] = static_cast<uint8_t>(i * 13 % 251);
  const size_t n_patches = size_t(batch) * tokens * pd, n = size_t(batch) * tokens * dim;
  auto patches = stored<T>(nans(n_patches));
  const long total = long(n_patches);
  const KaioGpuGrid g{grid.frames, grid.size, grid.tubelet_frames, grid.tubelet_size};
  host_shim::launch({blocks(n_patches, 256)}, {256},
                    [&] { kaio_gpu::patchify_kernel(patches.data(), windows.data(), total, g); });
  std::vector<float> want_patches(n_patches);
  kaio::train::cpu::patchify(want_patches.data(), windows.data(), batch, grid);
  expect_close<T>("patchify", want_patches, loaded(patches));

  const auto emb_values = random_values(n, 11), pos = random_values(size_t(tokens) * dim, 12),
             token = random_values(dim, 13), dx_values = random_values(n, 14);
  std::vector<uint8_t> mask(size_t(batch) * tokens);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = i % 4 == 1;
  const auto emb = stored<T>(emb_values), dx = stored<T>(dx_values);
  auto x = stored<T>(nans(n)), demb = stored<T>(nans(n));
  std::vector<float> dpos(size_t(tokens) * dim, 0.0f), dtoken(dim, 0.0f);
  host_shim::launch({blocks(n, 256)}, {256}, [&] {
    kaio_gpu::combine_forward_kernel(x.data(), emb.data(), token.data(), pos.data(), mask.data(), long(n), tokens, dim);
  });
  host_shim::launch({blocks(size_t(tokens) * dim, 256)}, {256}, [&] {
    kaio_gpu::combine_backward_kernel(demb.data(), dpos.data(), dx.data(), mask.data(), batch, tokens, dim);
  });
  host_shim::launch({blocks(dim, 64)}, {64}, [&] {
    kaio_gpu::mask_token_grad_kernel(dtoken.data(), dx.data(), mask.data(), long(batch) * tokens, dim);
  });
  const auto emb_read = loaded(emb), dx_read = loaded(dx);
  std::vector<float> want_x(n), want_demb(n), want_dpos(dpos.size(), 0.0f), want_dtoken(dim, 0.0f);
  kaio::train::cpu::embed_combine_forward(want_x.data(), emb_read.data(), token.data(), pos.data(), mask.data(), batch,
                                          tokens, dim);
  kaio::train::cpu::embed_combine_backward(want_demb.data(), want_dtoken.data(), want_dpos.data(), dx_read.data(),
                                           mask.data(), batch, tokens, dim);
  expect_close<T>("embed x", want_x, loaded(x));
  expect_close<T>("embed demb", want_demb, loaded(demb));
  expect_close<float>("embed dpos", want_dpos, dpos);
  expect_close<float>("embed dmask_token", want_dtoken, dtoken);
}

// gemm.cu's linear_forward_as and linear_backward_as: the bias broadcast,
// the tiled products (16x16 blocks, bias through beta = 1, the weight
// gradient accumulating) and the bias gradient's column sums.
template <typename T>
void check_linear() {
  const int rows = 29, in = 37, out = 21, tile = kaio_gpu::kTile;
  const auto x = random_values(size_t(rows) * in, 17), w = random_values(size_t(out) * in, 18),
             b = random_values(out, 19), dy = random_values(size_t(rows) * out, 20),
             dw0 = random_values(size_t(out) * in, 21), db0 = random_values(out, 22);
  const auto in_t = stored<T>(x), dout_t = stored<T>(dy);
  auto y = stored<T>(nans(size_t(rows) * out)), dx = stored<T>(nans(size_t(rows) * in));
  std::vector<float> dw = dw0, db = db0;
  const kaio_gpu::GemmBatch one;
  auto product = [&](bool ta, bool tb, int m, int n, int k, auto* a, int lda, auto* bm, int ldb, float beta, auto* c,
                     int ldc) {
    host_shim::launch({unsigned((n + tile - 1) / tile), unsigned((m + tile - 1) / tile), 1},
                      {unsigned(tile), unsigned(tile), 1},
                      [&] { kaio_gpu::tiled_gemm_kernel(ta, tb, m, n, k, 1.0f, a, lda, bm, ldb, beta, c, ldc, one); });
  };
  host_shim::launch({blocks(size_t(rows) * out, 256)}, {256},
                    [&] { kaio_gpu::broadcast_bias_kernel(y.data(), b.data(), rows, out); });
  product(false, true, rows, out, in, in_t.data(), in, w.data(), in, 1.0f, y.data(), out);
  product(false, false, rows, in, out, dout_t.data(), out, w.data(), in, 0.0f, dx.data(), in);
  product(true, false, out, in, rows, dout_t.data(), out, in_t.data(), in, 1.0f, dw.data(), in);
  host_shim::launch({blocks(out, 256)}, {256},
                    [&] { kaio_gpu::column_sum_kernel(db.data(), dout_t.data(), rows, out); });
  const auto x_read = loaded(in_t), dy_read = loaded(dout_t);
  std::vector<float> want_y(size_t(rows) * out), want_dx(size_t(rows) * in), want_dw = dw0, want_db = db0;
  kaio::train::cpu::linear_forward(want_y.data(), x_read.data(), w.data(), b.data(), rows, in, out);
  kaio::train::cpu::linear_backward(want_dx.data(), want_dw.data(), want_db.data(), dy_read.data(), x_read.data(),
                                    w.data(), rows, in, out);
  expect_close<T>("linear out", want_y, loaded(y));
  expect_close<T>("linear din", want_dx, loaded(dx));
  // The weight gradient is fp32 but its product ran on bf16 operands.
  const double dw_tol = kaio_gpu::is_bf16<T> ? 2e-2 : 1e-5, dw_err = host_elements::relative_error(dw, want_dw);
  std::printf("%-24s %s: max rel error %.3g\n", "linear dweight (+=)", type_name<T>(), dw_err);
  EXPECT_LT(dw_err, dw_tol) << type_name<T>();
  expect_close<float>("linear dbias (+=)", want_db, db);
}

}  // namespace

TEST(TrainOpsOnHost, LinearLayerMatchesTheCpuLayer) {
  check_linear<float>();
  check_linear<Bf16>();
}

// adamw.cu: three AdamW steps against the cpu update; the figures' variant
// scales by their clip factor, and changes nothing when they are not finite.
TEST(TrainOpsOnHost, AdamWMatchesTheCpuUpdate) {
  const size_t n = 1001;
  const auto p0 = random_values(n, 23), grad = random_values(n, 24);
  std::vector<float> p = p0, m(n, 0.0f), v(n, 0.0f), want_p = p0, want_m(n, 0.0f), want_v(n, 0.0f);
  for (int step = 1; step <= 3; ++step) {
    const kaio::train::AdamWStep s{1e-2f, 0.9f, 0.95f, 1e-8f, 0.05f, 0.5f, step};
    const kaio_gpu::AdamWArgs a{s.lr,
                                s.beta1,
                                s.beta2,
                                s.eps,
                                s.weight_decay,
                                float(1.0 - std::pow(0.9, step)),
                                float(std::sqrt(1.0 - std::pow(0.95, step)))};
    host_shim::launch({blocks(n, 256)}, {256},
                      [&] { kaio_gpu::adamw_kernel(p.data(), grad.data(), m.data(), v.data(), n, a, s.grad_scale); });
    kaio::train::cpu::adamw_update(want_p.data(), grad.data(), want_m.data(), want_v.data(), n, s);
  }
  expect_close<float>("adamw param", want_p, p);
  expect_close<float>("adamw m", want_m, m);
  expect_close<float>("adamw v", want_v, v);

  const kaio_gpu::AdamWArgs a{1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f, 0.1f, float(std::sqrt(0.05))};
  std::vector<float> q = p0, qm(n, 0.0f), qv(n, 0.0f);
  KaioStepFigures figures{1.0, 2.0, 0.25f, 0};
  host_shim::launch({blocks(n, 256)}, {256}, [&] {
    kaio_gpu::adamw_figures_kernel(q.data(), grad.data(), qm.data(), qv.data(), n, a, &figures);
  });
  EXPECT_EQ(q, p0) << "a step that is not finite changes nothing";
  figures.finite = 1;
  host_shim::launch({blocks(n, 256)}, {256}, [&] {
    kaio_gpu::adamw_figures_kernel(q.data(), grad.data(), qm.data(), qv.data(), n, a, &figures);
  });
  std::vector<float> r = p0, rm(n, 0.0f), rv(n, 0.0f);
  host_shim::launch({blocks(n, 256)}, {256},
                    [&] { kaio_gpu::adamw_kernel(r.data(), grad.data(), rm.data(), rv.data(), n, a, 0.25f); });
  EXPECT_EQ(q, r) << "the figures' clip factor scales the gradient";
}

// reductions.cu: kBlocks partial sums of squares, then the norm, the clip
// factor and finiteness from them (one block of kSumThreads).
TEST(TrainOpsOnHost, GradientFiguresMatchDouble) {
  const size_t n = 70001;
  const auto grad = random_values(n, 25);
  double want = 0;
  for (float g : grad) want += double(g) * g;
  std::vector<float> partial(kaio_gpu::kBlocks, NAN);
  host_shim::launch({kaio_gpu::kBlocks}, {kaio_gpu::kThreads},
                    [&] { kaio_gpu::sum_squares_kernel(partial.data(), grad.data(), n); });
  for (const double max_norm : {0.0, 1.0, 1e9}) {
    KaioStepFigures figures{1.5, 0, 0, 0};
    host_shim::launch({1}, {kaio_gpu::kSumThreads},
                      [&] { kaio_gpu::grad_figures_kernel(&figures, partial.data(), max_norm); });
    const double norm = std::sqrt(want);
    std::printf("gradient norm: double %.8f, kernels %.8f, clip %.6g at max_norm %g\n", norm, figures.grad_norm,
                figures.clip, max_norm);
    EXPECT_LT(std::abs(figures.grad_norm - norm) / norm, 1e-6);
    EXPECT_FLOAT_EQ(figures.clip, max_norm > 0 && norm > max_norm ? float(max_norm / (norm + 1e-6)) : 1.0f);
    EXPECT_EQ(figures.finite, 1);
  }
  KaioStepFigures not_finite{NAN, 0, 0, 1};
  host_shim::launch({1}, {kaio_gpu::kSumThreads},
                    [&] { kaio_gpu::grad_figures_kernel(&not_finite, partial.data(), 1.0); });
  EXPECT_EQ(not_finite.finite, 0) << "a NaN loss makes the step not finite";
}

TEST(TrainOpsOnHost, GeluAndAddMatchTheCpuLayers) {
  check_gelu_and_add<float>();
  check_gelu_and_add<Bf16>();
}

TEST(TrainOpsOnHost, LayerNormMatchesTheCpuLayer) {
  check_layernorm<float>();
  check_layernorm<Bf16>();
}

TEST(TrainOpsOnHost, MaskedMseMatchesTheCpuLayer) {
  check_masked_mse<float>();
  check_masked_mse<Bf16>();
}

TEST(TrainOpsOnHost, PatchifyAndCombineMatchTheCpuLayers) {
  check_embed<float>();
  check_embed<Bf16>();
}

// attention.cu's naive softmax over rows of 97 (64 threads) and 300 (256
// threads) scores, and its backward, against double.
TEST(TrainOpsOnHost, SoftmaxRowsMatchDouble) {
  for (int cols : {97, 300}) {
    const int rows = 5;
    const unsigned threads = cols >= 256 ? 256 : 64;
    const auto scores = random_values(size_t(rows) * cols, 15), dp = random_values(size_t(rows) * cols, 16);
    std::vector<float> p = scores, d = dp;
    host_shim::launch({unsigned(rows)}, {threads}, [&] { kaio_gpu::softmax_rows_kernel(p.data(), cols); });
    host_shim::launch({unsigned(rows)}, {threads},
                      [&] { kaio_gpu::softmax_backward_rows_kernel(d.data(), p.data(), cols); });
    std::vector<float> want_p(p.size()), want_d(d.size());
    for (int r = 0; r < rows; ++r) {
      const float* s = scores.data() + size_t(r) * cols;
      double top = -INFINITY, sum = 0, dot = 0;
      for (int c = 0; c < cols; ++c) top = std::max(top, double(s[c]));
      for (int c = 0; c < cols; ++c) sum += std::exp(s[c] - top);
      for (int c = 0; c < cols; ++c) {
        const size_t at = size_t(r) * cols + c;
        want_p[at] = float(std::exp(s[c] - top) / sum);
        dot += double(dp[at]) * want_p[at];
      }
      for (int c = 0; c < cols; ++c) {
        const size_t at = size_t(r) * cols + c;
        want_d[at] = float(want_p[at] * (dp[at] - dot));
      }
    }
    expect_close<float>("softmax " + std::to_string(cols), want_p, p);
    expect_close<float>("softmax backward " + std::to_string(cols), want_d, d);
  }
}
