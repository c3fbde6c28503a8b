// Finite-difference checks of every cpu layer's backward pass. Each layer's
// output is contracted with fixed random weights R (loss = sum(out * R)), so the
// analytic input gradient is the layer's backward applied to R. Central
// differences in float with step 1e-2 on an objective summed in double.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "train/layers/adamw.h"
#include "train/layers/attention.h"
#include "train/layers/gelu.h"
#include "train/layers/layernorm.h"
#include "train/layers/linear.h"
#include "train/layers/masked_mse.h"
#include "train/layers/tubelet_embed.h"

using namespace kaio::train;

namespace {

std::vector<float> random_vector(size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

// Compares analytic[i] with the central difference of objective() in x[i].
void expect_gradient(const char* what, std::vector<float>& x, const std::vector<float>& analytic,
                     const std::function<double()>& objective, double tolerance = 2e-2) {
  const float h = 1e-2f;
  double worst = 0;
  for (size_t i = 0; i < x.size(); i += 1 + x.size() / 97) {
    const float saved = x[i];
    x[i] = saved + h;
    const double up = objective();
    x[i] = saved - h;
    const double down = objective();
    x[i] = saved;
    const double numeric = (up - down) / (2 * h);
    const double err = std::abs(numeric - analytic[i]) / std::max(1.0, std::abs(numeric));
    worst = std::max(worst, err);
    EXPECT_LT(err, tolerance) << what << "[" << i << "] numeric " << numeric << " analytic " << analytic[i];
  }
  std::printf("%s: max relative error %.3g\n", what, worst);
}

}  // namespace

TEST(LayerGradcheck, Linear) {
  const int rows = 5, in = 7, out = 3;
  auto x = random_vector(rows * in, 1), w = random_vector(out * in, 2), b = random_vector(out, 3);
  const auto r = random_vector(rows * out, 4);
  std::vector<float> y(rows * out), dx(rows * in), dw(out * in, 0.f), db(out, 0.f);
  auto objective = [&] {
    cpu::linear_forward(y.data(), x.data(), w.data(), b.data(), rows, in, out);
    return dot(y, r);
  };
  cpu::linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), rows, in, out);
  expect_gradient("linear.x", x, dx, objective);
  expect_gradient("linear.w", w, dw, objective);
  expect_gradient("linear.b", b, db, objective);
}

TEST(LayerGradcheck, LayerNorm) {
  const int rows = 4, dim = 16;
  auto x = random_vector(rows * dim, 5), w = random_vector(dim, 6), b = random_vector(dim, 7);
  const auto r = random_vector(rows * dim, 8);
  std::vector<float> y(rows * dim), mean(rows), rstd(rows), dx(rows * dim, 0.f), dw(dim, 0.f), db(dim, 0.f);
  auto objective = [&] {
    cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, dim);
    return dot(y, r);
  };
  objective();
  cpu::layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(), rstd.data(), rows,
                          dim);
  expect_gradient("layernorm.x", x, dx, objective);
  expect_gradient("layernorm.w", w, dw, objective);
  expect_gradient("layernorm.b", b, db, objective);
}

TEST(LayerGradcheck, Attention) {
  const cpu::AttentionShape s{2, 5, 2, 4};
  auto qkv = random_vector(s.batch * s.tokens * 3 * s.dim(), 9);
  const auto r = random_vector(s.batch * s.tokens * s.dim(), 10);
  std::vector<float> out(r.size()), probs(s.batch * s.heads * s.tokens * s.tokens), dprobs(probs.size()),
      dqkv(qkv.size());
  auto objective = [&] {
    cpu::attention_forward(out.data(), probs.data(), qkv.data(), s);
    return dot(out, r);
  };
  objective();
  cpu::attention_backward(dqkv.data(), dprobs.data(), r.data(), qkv.data(), probs.data(), s);
  expect_gradient("attention.qkv", qkv, dqkv, objective);
}

TEST(LayerGradcheck, Gelu) {
  auto x = random_vector(64, 11, 2.0f);
  const auto r = random_vector(64, 12);
  std::vector<float> y(64), dx(64);
  auto objective = [&] {
    cpu::gelu_forward(y.data(), x.data(), x.size());
    return dot(y, r);
  };
  cpu::gelu_backward(dx.data(), r.data(), x.data(), x.size());
  expect_gradient("gelu.x", x, dx, objective);
}

TEST(LayerGradcheck, MaskedMse) {
  const int rows = 6, pd = 12;
  auto pred = random_vector(rows * pd, 13);
  const auto patches = random_vector(rows * pd, 14);
  const std::vector<uint8_t> mask{1, 0, 1, 1, 0, 1};
  std::vector<float> dpred(pred.size()), scratch(pred.size());
  auto objective = [&] {
    return cpu::masked_mse_forward_backward(scratch.data(), pred.data(), patches.data(), mask.data(), rows, pd);
  };
  const double loss =
      cpu::masked_mse_forward_backward(dpred.data(), pred.data(), patches.data(), mask.data(), rows, pd);
  EXPECT_GT(loss, 0.0);
  for (int i = 0; i < pd; ++i) EXPECT_EQ(dpred[pd + i], 0.0f) << "visible rows get no gradient";
  expect_gradient("masked_mse.pred", pred, dpred, objective);
}

TEST(LayerGradcheck, EmbedCombine) {
  const int batch = 2, tokens = 3, dim = 4;
  auto emb = random_vector(batch * tokens * dim, 15), token = random_vector(dim, 16),
       pos = random_vector(tokens * dim, 17);
  const auto r = random_vector(batch * tokens * dim, 18);
  const std::vector<uint8_t> mask{0, 1, 0, 1, 1, 0};
  std::vector<float> x(r.size()), demb(r.size()), dtoken(dim, 0.f), dpos(tokens * dim, 0.f);
  auto objective = [&] {
    cpu::embed_combine_forward(x.data(), emb.data(), token.data(), pos.data(), mask.data(), batch, tokens, dim);
    return dot(x, r);
  };
  cpu::embed_combine_backward(demb.data(), dtoken.data(), dpos.data(), r.data(), mask.data(), batch, tokens, dim);
  expect_gradient("embed.emb", emb, demb, objective);
  expect_gradient("embed.mask_token", token, dtoken, objective);
  expect_gradient("embed.pos", pos, dpos, objective);
}

TEST(LayerPatchify, TubeletOrderAndNormalisation) {
  const TubeletGrid g{4, 8, 2, 4};  // 2x2x2 tokens of 2*4*4*3 values
  std::vector<uint8_t> window(g.window_bytes());
  for (size_t i = 0; i < window.size(); ++i) window[i] = static_cast<uint8_t>(i * 7 % 251);
  std::vector<float> patches(g.tokens() * g.patch_dim());
  cpu::patchify(patches.data(), window.data(), 1, g);
  // token (t=1, y=0, x=1), value (dt=1, dy=2, dx=3, c=2)
  const int token = (1 * 2 + 0) * 2 + 1, value = ((1 * 4 + 2) * 4 + 3) * 3 + 2;
  const long pixel = ((static_cast<long>(1 * 2 + 1) * 8 + 0 * 4 + 2) * 8 + 1 * 4 + 3) * 3 + 2;
  EXPECT_FLOAT_EQ(patches[token * g.patch_dim() + value], (window[pixel] / 255.0f - 0.406f) / 0.225f);
}

TEST(LayerAdamW, MatchesClosedFormFirstStep) {
  // On step 1 Adam's bias-corrected update is lr * g / (|g| + eps) = lr * sign(g).
  std::vector<float> p{1.0f, -2.0f}, g{0.5f, -3.0f}, m(2, 0.f), v(2, 0.f);
  cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), 2, {0.1f, 0.9f, 0.95f, 1e-8f, 0.5f, 1.0f, 1});
  EXPECT_NEAR(p[0], 1.0f * (1 - 0.05f) - 0.1f, 1e-6);
  EXPECT_NEAR(p[1], -2.0f * (1 - 0.05f) + 0.1f, 1e-6);
}
