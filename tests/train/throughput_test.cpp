// Step time, tokens/s and MFU: kaio's model-FLOP formula against the matrix
// products PyTorch's autograd runs for the same model (count_flops.py), the
// device peak table, and the figures a running cpu trainer reports.
#include "train/throughput.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "train/trainer.h"

using namespace kaio::train;

namespace {

struct PipeCloser {
  void operator()(FILE* f) const noexcept { pclose(f); }
};

// Debian's python3, which has torch; a python3 earlier in PATH (pyenv) may not.
bool have_torch() {
  return std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
}

struct Shape {
  const char* model;
  int frames, size, batch;
};

// count_flops.py's counts, one per shape (one Python start for all: importing
// torch costs seconds); empty when it fails.
std::vector<double> pytorch_flops(const std::vector<Shape>& shapes) {
  std::string cmd = std::string("/usr/bin/python3 ") + KAIO_TRAIN_TEST_DIR + "/count_flops.py";
  for (const Shape& sh : shapes) {
    const ModelSpec s = model_spec(sh.model);
    for (int v : {s.dim, s.depth, s.heads, s.tubelet_frames, s.tubelet_size, sh.frames, sh.size, sh.batch})
      cmd += " " + std::to_string(v);
  }
  std::unique_ptr<FILE, PipeCloser> pipe(popen(cmd.c_str(), "r"));
  std::vector<double> counts;
  std::array<char, 64> line{};
  while (pipe && std::fgets(line.data(), line.size(), pipe.get())) counts.push_back(std::stod(line.data()));
  return counts;
}

}  // namespace

// Small windows keep PyTorch's cpu pass cheap; the odd grids (3x3, 3x3x3) and
// batches catch a dimension used in the wrong place.
TEST(StepFlops, MatchesTheMatrixProductsPyTorchRuns) {
  if (!have_torch()) GTEST_SKIP() << "skipped: /usr/bin/python3 has no torch (python3-torch)";
  const std::vector<Shape> shapes{{"tiny", 4, 24, 3}, {"small", 6, 48, 1}, {"base", 2, 48, 2}};
  const auto theirs = pytorch_flops(shapes);
  ASSERT_EQ(theirs.size(), shapes.size()) << "count_flops.py failed (its error is above)";
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& c = shapes[i];
    const ModelSpec spec = model_spec(c.model);
    const double ours = step_flops(spec, make_grid(spec, c.frames, c.size), c.batch);
    std::printf("%-5s %dx%dx%d batch %d: kaio %.0f, PyTorch %.0f FLOPs\n", c.model, c.frames, c.size, c.size, c.batch,
                ours, theirs[i]);
    EXPECT_EQ(ours, theirs[i]) << c.model;
  }
}

TEST(PeakFlops, TableByDeviceName) {
  EXPECT_DOUBLE_EQ(peak_flops("NVIDIA H100 80GB HBM3", true), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_flops("NVIDIA H100 80GB HBM3", false), 66.9e12);
  EXPECT_DOUBLE_EQ(peak_flops("NVIDIA H200", true), 989.4e12);
  EXPECT_DOUBLE_EQ(peak_flops("NVIDIA H100 PCIe", true), 756e12);
  EXPECT_DOUBLE_EQ(peak_flops("AMD Instinct MI300X", true), 1307.4e12);
  EXPECT_DOUBLE_EQ(peak_flops("AMD Instinct MI300X", false), 163.4e12);
  EXPECT_DOUBLE_EQ(peak_flops("NVIDIA A100-SXM4-80GB", false), 19.5e12);
  EXPECT_EQ(peak_flops("NVIDIA H100 NVL", true), 0) << "no checked figure: unknown, not the SXM peak";
  EXPECT_EQ(peak_flops("cpu", false), 0);
  EXPECT_EQ(peak_flops("NVIDIA GeForce RTX 4090", true), 0);
}

TEST(TrainerThroughput, CpuTrainerReportsStepTimeAndTokensButNoMfu) {
  kaio::TrainConfig c;
  c.backend = "cpu";
  c.model = "tiny";
  c.batch_size = 2;
  c.threads = 2;
  c.log_every = 2;
  auto trainer = Trainer::create(c, 4, 16);
  EXPECT_EQ(trainer->throughput().step_seconds, 0) << "nothing before the first step";
  std::vector<uint8_t> windows(size_t{2} * 4 * 16 * 16 * 3);
  std::mt19937 rng(1);
  for (auto& b : windows) b = static_cast<uint8_t>(rng());
  for (int i = 0; i < 3; ++i) {
    trainer->step(windows.data(), 2);
    const Throughput t = trainer->throughput();
    EXPECT_GT(t.step_seconds, 0) << "step " << i;
    EXPECT_GT(t.tokens_per_second, 0) << "step " << i;
    EXPECT_EQ(t.mfu, -1) << "step " << i;
    // 2 windows of 2x2x2 tokens a step.
    EXPECT_NEAR(t.tokens_per_second * t.step_seconds, 16, 1e-6) << "step " << i;
  }
}
