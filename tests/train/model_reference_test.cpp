// The cpu backend against PyTorch: data/reference_tiny.safetensors holds the
// initial weights, batch, loss, every gradient and 10 AdamW-step losses,
// written by make_reference.py (which owns the inputs and mirrors the mask).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "tests/support/sandbox.h"
#include "train/model.h"
#include "train/safetensors.h"
#include "train/trainer.h"
#include "train/trainer_internal.h"

using namespace kaio::train;
namespace fs = std::filesystem;

namespace {

const fs::path kReference = fs::path(KAIO_SOURCE_DIR) / "tests/train/data/reference_tiny.safetensors";

std::vector<double> f64(const Tensor& t) {
  std::vector<double> out(t.bytes.size() / 8);
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  return out;
}

struct Reference {
  TensorMap tensors;
  std::map<std::string, std::string> meta;
  kaio::TrainConfig config;
  int frames = 0, size = 0, batch = 0;

  Reference() {
    tensors = read_safetensors(kReference, &meta);
    config.backend = "cpu";
    config.model = "tiny";
    config.threads = 2;
    config.batch_size = batch = std::stoi(meta.at("batch"));
    config.seed = std::stoull(meta.at("seed"));
    config.mask_ratio = std::stod(meta.at("mask_ratio"));
    config.lr = std::stod(meta.at("lr"));
    config.warmup_steps = std::stoi(meta.at("warmup"));
    config.max_steps = std::stoi(meta.at("max_steps"));
    config.weight_decay = std::stod(meta.at("weight_decay"));
    config.grad_clip = std::stod(meta.at("grad_clip"));
    frames = std::stoi(meta.at("frames"));
    size = std::stoi(meta.at("size"));
  }
  const uint8_t* windows() const { return reinterpret_cast<const uint8_t*>(tensors.at("windows").bytes.data()); }
  std::unique_ptr<Trainer> trainer_with_reference_weights() const {
    auto trainer = Trainer::create(config, frames, size);
    Model& model = internals(*trainer).model();
    std::vector<float> params(model.param_count());
    for (const ParamInfo& info : model.params()) {
      const auto values = as_f32(tensors.at("param." + info.name), info.name);
      EXPECT_EQ(values.size(), info.count) << info.name;
      std::copy(values.begin(), values.end(), params.begin() + info.offset);
    }
    model.write_params(params.data());
    return trainer;
  }
};

}  // namespace

TEST(ModelReference, CpuLossAndGradientsMatchPyTorch) {
  if (!fs::exists(kReference)) GTEST_SKIP() << "skipped: " << kReference << " missing (run make_reference.py)";
  const Reference ref;
  auto trainer = ref.trainer_with_reference_weights();
  Model& model = internals(*trainer).model();
  const auto mask = tube_mask(model.grid(), ref.batch, ref.config.mask_ratio, ref.config.seed, 0);
  const double loss = model.forward_backward(ref.windows(), mask.data(), ref.batch);
  const double want = f64(ref.tensors.at("loss"))[0];
  std::printf("loss: kaio %.8f, PyTorch %.8f, relative error %.3g\n", loss, want, std::abs(loss - want) / want);
  EXPECT_LT(std::abs(loss - want) / want, 1e-5);
  std::vector<float> grads(model.param_count());
  model.read_grads(grads.data());
  double worst = 0;
  for (const ParamInfo& info : model.params()) {
    const auto expected = as_f32(ref.tensors.at("grad." + info.name), info.name);
    double max_ref = 0, max_diff = 0;
    for (size_t i = 0; i < info.count; ++i) {
      max_ref = std::max(max_ref, std::abs(double(expected[i])));
      max_diff = std::max(max_diff, std::abs(double(expected[i]) - grads[info.offset + i]));
    }
    // Error relative to the tensor's largest gradient, so near-zero entries do not dominate.
    const double rel = max_diff / std::max(max_ref, 1e-12);
    worst = std::max(worst, rel);
    EXPECT_LT(rel, 1e-4) << info.name << ": max abs diff " << max_diff << ", max |grad| " << max_ref;
  }
  std::printf("gradients: max relative error %.3g over %zu tensors\n", worst, model.params().size());
}

TEST(ModelReference, TenAdamWStepsMatchPyTorchAndResumeBitIdentically) {
  if (!fs::exists(kReference)) GTEST_SKIP() << "skipped: " << kReference << " missing (run make_reference.py)";
  const Reference ref;
  const auto want = f64(ref.tensors.at("losses"));
  auto trainer = ref.trainer_with_reference_weights();
  const kaio::test::Sandbox dir("ref-ckpt");
  const fs::path ckpt = dir / "ckpt";
  std::vector<double> got;
  double worst = 0;
  for (size_t s = 0; s < want.size(); ++s) {
    if (s == want.size() / 2) trainer->save_checkpoint(ckpt, "half");
    got.push_back(trainer->step(ref.windows(), ref.batch).loss);
    const double rel = std::abs(got[s] - want[s]) / want[s];
    worst = std::max(worst, rel);
    EXPECT_LT(rel, 1e-5) << "step " << s << ": kaio " << got[s] << ", PyTorch " << want[s];
  }
  std::printf("10 AdamW steps: max relative loss error %.3g (last: kaio %.8f, PyTorch %.8f)\n", worst, got.back(),
              want.back());
  auto resumed = Trainer::create(ref.config, ref.frames, ref.size);
  EXPECT_EQ(resumed->load_checkpoint(ckpt), "half");
  for (size_t s = want.size() / 2; s < want.size(); ++s)
    EXPECT_EQ(resumed->step(ref.windows(), ref.batch).loss, got[s]) << "resumed step " << s;
}
