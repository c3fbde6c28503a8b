// Feeding the next batch while a step computes (Trainer::stage, begin_step,
// finish_step): on the cpu backend the split step and the overlapped steps
// are bit-identical to step() and the staged masks follow the step index; on
// GPUs (skipped without one) the overlapped steps agree with the cpu backend,
// the device-side gradient clip with the host's, a non-finite step leaves the
// weights alone, and data_wait_fraction sees the device idle only when the
// host leaves a gap between steps.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "common/error.h"
#include "tests/train/moving_shapes.h"
#include "train/backend.h"
#include "train/model.h"
#include "train/trainer.h"
#include "train/trainer_internal.h"

using namespace kaio::train;
using kaio::train::test::moving_shapes;

namespace {

constexpr int kFrames = 8, kSize = 32, kBatch = 2, kSteps = 4;

kaio::TrainConfig tiny_config(const std::string& backend) {
  kaio::TrainConfig c;
  c.backend = backend;
  c.model = "tiny";
  c.batch_size = kBatch;
  c.lr = 1e-3;
  c.warmup_steps = 2;
  c.threads = 2;
  return c;
}

// A different batch for every step, so a batch trained at the wrong step shows.
std::vector<std::vector<uint8_t>> batches(int count, int batch = kBatch, int frames = kFrames, int size = kSize) {
  std::vector<std::vector<uint8_t>> out;
  out.reserve(count);
  for (int s = 0; s < count; ++s) out.push_back(moving_shapes(batch, frames, size, 50 + s));
  return out;
}

std::vector<float> params_of(Trainer& trainer) {
  const Model& model = internals(trainer).model();
  std::vector<float> params(model.param_count());
  model.read_params(params.data());
  return params;
}

// Step n+1's batch is staged while step n is in flight.
std::vector<StepResult> overlapped_steps(Trainer& trainer, const std::vector<std::vector<uint8_t>>& data, int batch) {
  std::vector<StepResult> results;
  results.reserve(data.size());
  trainer.stage(data[0].data(), batch);
  for (size_t s = 0; s < data.size(); ++s) {
    trainer.begin_step();
    if (s + 1 < data.size()) trainer.stage(data[s + 1].data(), batch);
    results.push_back(trainer.finish_step());
  }
  return results;
}

double max_rel_error(const std::vector<float>& want, const std::vector<float>& got) {
  double max_abs = 0, max_ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_abs = std::max(max_abs, std::abs(double(want[i]) - got[i]));
    max_ref = std::max(max_ref, std::abs(double(want[i])));
  }
  return max_abs / std::max(max_ref, 1e-12);
}

}  // namespace

TEST(TrainOverlap, StepIsStageBeginFinishBitForBit) {
  auto whole = Trainer::create(tiny_config("cpu"), kFrames, kSize);
  auto split = Trainer::create(tiny_config("cpu"), kFrames, kSize);
  const auto data = batches(kSteps);
  for (int s = 0; s < kSteps; ++s) {
    const StepResult want = whole->step(data[s].data(), kBatch);
    split->stage(data[s].data(), kBatch);
    split->begin_step();
    const StepResult got = split->finish_step();
    EXPECT_EQ(got.loss, want.loss) << "step " << s;
    EXPECT_EQ(got.grad_norm, want.grad_norm) << "step " << s;
    EXPECT_EQ(got.lr, want.lr) << "step " << s;
  }
  EXPECT_EQ(split->steps_done(), kSteps);
  EXPECT_EQ(params_of(*split), params_of(*whole));
}

TEST(TrainOverlap, StagingDuringAStepGivesTheSequentialLosses) {
  auto sequential = Trainer::create(tiny_config("cpu"), kFrames, kSize);
  auto overlapped = Trainer::create(tiny_config("cpu"), kFrames, kSize);
  const auto data = batches(kSteps);
  const auto got = overlapped_steps(*overlapped, data, kBatch);
  for (int s = 0; s < kSteps; ++s) {
    const StepResult want = sequential->step(data[s].data(), kBatch);
    EXPECT_EQ(got[s].loss, want.loss) << "step " << s;
    EXPECT_EQ(got[s].grad_norm, want.grad_norm) << "step " << s;
  }
  EXPECT_EQ(params_of(*overlapped), params_of(*sequential));
}

// With lr 0 the weights never change, so step n's loss is that of its batch
// under tube_mask(step n): a batch staged during step n-1 must carry step n's
// mask, not that of the step in flight.
TEST(TrainOverlap, StagedMasksFollowTheStepIndex) {
  auto config = tiny_config("cpu");
  config.lr = 0;
  auto trainer = Trainer::create(config, kFrames, kSize);
  const auto data = batches(kSteps);
  const auto got = overlapped_steps(*trainer, data, kBatch);

  auto backend = make_cpu_backend(2);
  const ModelSpec spec = model_spec("tiny");
  const TubeletGrid grid = make_grid(spec, kFrames, kSize);
  Model model(*backend, spec, grid, kBatch);
  model.init_weights(config.seed);
  for (int s = 0; s < kSteps; ++s) {
    const auto mask = tube_mask(grid, kBatch, config.mask_ratio, config.seed, s);
    ASSERT_NE(mask, tube_mask(grid, kBatch, config.mask_ratio, config.seed, s + 1)) << "masks must differ by step";
    EXPECT_EQ(got[s].loss, model.forward_backward(data[s].data(), mask.data(), kBatch)) << "step " << s;
  }
}

TEST(TrainOverlap, OneStagedBatchAndOneStepInFlightAtATime) {
  auto trainer = Trainer::create(tiny_config("cpu"), kFrames, kSize);
  const auto data = batches(1);
  EXPECT_THROW(trainer->begin_step(), kaio::Error) << "nothing staged";
  EXPECT_THROW(trainer->finish_step(), kaio::Error) << "nothing in flight";
  trainer->stage(data[0].data(), kBatch);
  EXPECT_THROW(trainer->stage(data[0].data(), kBatch), kaio::Error) << "a second staged batch";
  trainer->begin_step();
  trainer->stage(data[0].data(), kBatch);
  EXPECT_THROW(trainer->begin_step(), kaio::Error) << "a second step in flight";
  EXPECT_THROW(trainer->save_checkpoint("unused", ""), kaio::Error) << "checkpoint of a step in flight";
  EXPECT_THROW(trainer->export_safetensors("unused"), kaio::Error) << "weights of a step in flight";
  EXPECT_FALSE(std::filesystem::exists("unused")) << "nothing written for a step in flight";
  trainer->finish_step();
  trainer->begin_step();
  trainer->finish_step();
  EXPECT_EQ(trainer->steps_done(), 2);
}

// A non-finite loss is found where the step runs (on the device for GPUs):
// AdamW leaves the weights and moments alone and finish_step throws.
class NonFiniteStep : public ::testing::TestWithParam<std::string> {};

TEST_P(NonFiniteStep, LeavesTheWeightsAloneAndThrows) {
  std::string why;
  if (GetParam() != "cpu" && !make_gpu_backend(GetParam(), false, why))
    GTEST_SKIP() << "skipped: no GPU (" << why << ")";
  auto trainer = Trainer::create(tiny_config(GetParam()), kFrames, kSize);
  const auto data = batches(2);
  trainer->step(data[0].data(), kBatch);
  Model& model = internals(*trainer).model();
  auto params = params_of(*trainer);
  params[model.param("head.bias").offset] = std::nanf("");
  model.write_params(params.data());
  std::vector<float> m(model.param_count()), v(model.param_count());
  model.read_moments(m.data(), v.data());
  trainer->stage(data[1].data(), kBatch);
  trainer->begin_step();
  try {
    trainer->finish_step();
    FAIL() << "a NaN loss was not reported";
  } catch (const kaio::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not finite"), std::string::npos) << e.what();
  }
  EXPECT_EQ(trainer->steps_done(), 1);
  const auto after = params_of(*trainer);
  EXPECT_EQ(std::memcmp(after.data(), params.data(), params.size() * sizeof(float)), 0) << "weights changed";
  std::vector<float> m_after(m.size()), v_after(v.size());
  model.read_moments(m_after.data(), v_after.data());
  EXPECT_EQ(m_after, m) << "first moments changed";
  EXPECT_EQ(v_after, v) << "second moments changed";
}

INSTANTIATE_TEST_SUITE_P(Train, NonFiniteStep, ::testing::Values("cpu"), [](const auto& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(Gpu, NonFiniteStep, ::testing::Values("hip", "cuda"),
                         [](const auto& info) { return info.param; });

class GpuOverlapTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    if (!make_gpu_backend(GetParam(), false, why)) GTEST_SKIP() << "skipped: no GPU (" << why << ")";
  }
};

// The GPU's overlapped steps against the cpu backend's sequential ones, with
// the tolerances of gpu_backend_test.cpp (fp32: 1e-4).
TEST_P(GpuOverlapTest, OverlappedStepsMatchTheCpuBackend) {
  auto cpu = Trainer::create(tiny_config("cpu"), kFrames, kSize);
  auto gpu = Trainer::create(tiny_config(GetParam()), kFrames, kSize);
  const auto data = batches(kSteps);
  const auto got = overlapped_steps(*gpu, data, kBatch);
  for (int s = 0; s < kSteps; ++s) {
    const double want = cpu->step(data[s].data(), kBatch).loss;
    std::printf("step %d loss: cpu %.7f, %s overlapped %.7f\n", s, want, GetParam().c_str(), got[s].loss);
    EXPECT_LT(std::abs(got[s].loss - want) / want, 1e-4) << "step " << s;
  }
  EXPECT_LT(max_rel_error(params_of(*cpu), params_of(*gpu)), 1e-4);
}

// A clip that binds at every step: the device's norm and clip factor against
// the cpu backend's host arithmetic, on the backend's ops and on whole steps.
TEST_P(GpuOverlapTest, DeviceClipMatchesHostClip) {
  auto cpu_backend = make_cpu_backend(2);
  std::string why;
  auto gpu_backend = make_gpu_backend(GetParam(), false, why);
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> grad(100003);
  for (float& g : grad) g = dist(rng);
  const double max_norm = 10.0;  // the norm is about 316
  StepFigures want{1.0, 0, 0, 0};
  cpu_backend->grad_figures(&want, grad.data(), grad.size(), max_norm);
  auto* dgrad = static_cast<float*>(gpu_backend->allocate(grad.size() * sizeof(float)));
  auto* dfigures = static_cast<StepFigures*>(gpu_backend->allocate(sizeof(StepFigures)));
  gpu_backend->to_device(dgrad, grad.data(), grad.size() * sizeof(float));
  gpu_backend->to_device(dfigures, &want, sizeof(want));
  gpu_backend->grad_figures(dfigures, dgrad, grad.size(), max_norm);
  StepFigures got{};
  gpu_backend->to_host(&got, dfigures, sizeof(got));
  gpu_backend->release(dgrad);
  gpu_backend->release(dfigures);
  std::printf("norm: host %.9g, device %.9g; clip: host %.9g, device %.9g\n", want.grad_norm, got.grad_norm, want.clip,
              got.clip);
  ASSERT_LT(want.clip, 0.1f) << "the clip must bind";
  EXPECT_LT(std::abs(got.grad_norm - want.grad_norm) / want.grad_norm, 1e-5);
  EXPECT_LT(std::abs(got.clip - want.clip) / want.clip, 1e-5);
  EXPECT_EQ(got.finite, 1);

  auto config = tiny_config("cpu");
  config.grad_clip = 1e-3;
  auto cpu = Trainer::create(config, kFrames, kSize);
  config.backend = GetParam();
  auto gpu = Trainer::create(config, kFrames, kSize);
  const auto data = batches(kSteps);
  for (int s = 0; s < kSteps; ++s) {
    const StepResult a = cpu->step(data[s].data(), kBatch), b = gpu->step(data[s].data(), kBatch);
    ASSERT_GT(a.grad_norm, config.grad_clip) << "the clip must bind at step " << s;
    EXPECT_LT(std::abs(b.grad_norm - a.grad_norm) / a.grad_norm, 1e-4) << "step " << s;
  }
  EXPECT_LT(max_rel_error(params_of(*cpu), params_of(*gpu)), 1e-4);
}

// Device idle time between steps: near 0 when the next batch is staged while
// a step computes; when the host makes the next batch only after a step ends
// (moving_shapes: real work, not a sleep), the device sees most of that gap.
TEST_P(GpuOverlapTest, DataWaitIsTheDeviceIdleTime) {
  constexpr int kFramesBig = 16, kSizeBig = 112, kBatchBig = 4, kStepsBig = 12;
  auto config = tiny_config(GetParam());
  config.model = "small";
  config.batch_size = kBatchBig;
  const auto data = batches(kStepsBig, kBatchBig, kFramesBig, kSizeBig);

  auto ahead = Trainer::create(config, kFramesBig, kSizeBig);
  ahead->note_data_wait(100.0);  // host waits do not count on a GPU backend
  overlapped_steps(*ahead, data, kBatchBig);
  const double ahead_fraction = ahead->data_wait_fraction();

  auto gapped = Trainer::create(config, kFramesBig, kSizeBig);
  double gap_seconds = 0, busy_seconds = 0;
  for (int s = 0; s < kStepsBig; ++s) {
    const auto start = std::chrono::steady_clock::now();
    const auto windows = moving_shapes(kBatchBig, kFramesBig, kSizeBig, 500 + s);
    gapped->stage(windows.data(), kBatchBig);
    if (s > 0) gap_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    gapped->begin_step();
    busy_seconds += gapped->finish_step().compute_seconds;
  }
  const double host_fraction = gap_seconds / (gap_seconds + busy_seconds);
  const double gapped_fraction = gapped->data_wait_fraction();
  std::printf("%s data wait: staged ahead %.4f, host gap %.4f (the host's gaps: %.4f of the time)\n",
              GetParam().c_str(), ahead_fraction, gapped_fraction, host_fraction);
  EXPECT_LT(ahead_fraction, 0.05);
  EXPECT_GT(gapped_fraction, 0.5 * host_fraction);
  EXPECT_GT(gapped_fraction, ahead_fraction);
}

INSTANTIATE_TEST_SUITE_P(Gpu, GpuOverlapTest, ::testing::Values("hip", "cuda"),
                         [](const auto& info) { return info.param; });
