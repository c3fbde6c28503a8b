#pragma once
// The masked-tubelet model (VideoMAE/SimMIM family): tubelet embedding, mask
// token, learned positional embedding, pre-LayerNorm transformer blocks, final
// LayerNorm and a linear pixel head; loss on masked tubelets only. Parameters
// live in one contiguous backend buffer (gradients and AdamW moments mirror
// it), in the order and PyTorch layout of params().
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "train/backend.h"

namespace kaio::train {

struct ModelSpec {
  std::string name;
  int dim, depth, heads;
  int tubelet_frames, tubelet_size;
};

// "tiny" (64/2/4, tubelets 2x8x8), "small" (ViT-S 384/12/6, 2x16x16),
// "base" (768/12/12, 2x16x16). Throws kaio::Error(config) naming train.model.
ModelSpec model_spec(std::string_view name);
// Throws kaio::Error(config) when the window does not tile into tubelets.
TubeletGrid make_grid(const ModelSpec& spec, int frames, int size);

struct ParamInfo {
  std::string name;  // PyTorch-style, e.g. "blocks.0.attn.qkv.weight"
  std::vector<int64_t> shape;
  size_t offset, count;  // in floats, inside the parameter buffer
  bool decay;            // AdamW weight decay applies (weight matrices only)
};

// Tube masking: round(ratio * spatial positions) positions per sample, the same
// at every time slice, drawn from (seed, step, sample) with splitmix64 and a
// partial Fisher-Yates shuffle (tests/train/make_reference.py mirrors it).
std::vector<uint8_t> tube_mask(const TubeletGrid& g, int batch, double ratio, uint64_t seed, int64_t step);

class Model {
 public:
  Model(Backend& backend, const ModelSpec& spec, const TubeletGrid& grid, int max_batch);

  const ModelSpec& spec() const { return spec_; }
  const TubeletGrid& grid() const { return grid_; }
  const std::vector<ParamInfo>& params() const { return params_; }
  const ParamInfo& param(std::string_view name) const;
  size_t param_count() const { return param_count_; }

  // Normal(0, 0.02) for matrices, positional embedding and mask token; LayerNorm
  // weights 1; biases 0. Deterministic in seed.
  void init_weights(uint64_t seed);
  void read_params(float* host) const;
  void write_params(const float* host);
  void read_grads(float* host) const;
  void write_grads(const float* host);  // the all-reduced sum of the ranks' gradients
  // AdamW moments, in parameter order: m then v.
  void read_moments(float* host_m, float* host_v) const;
  void write_moments(const float* host_m, const float* host_v);

  // Starts the upload of one batch (host pointers, free on return) into the
  // device buffers the step begun last is not using; the next
  // forward_backward() trains on it.
  void stage(const uint8_t* windows, const uint8_t* mask, int batch);
  // Forward and backward on the staged batch: the loss goes to the step's
  // figures, gradients to the gradient buffer. Queued without a host wait on GPUs.
  void forward_backward();
  // stage + forward_backward, returning the loss (reads it back: a host wait).
  double forward_backward(const uint8_t* windows, const uint8_t* mask, int batch);
  // Sets the figures' loss (a step with no windows here, or the loss of a job's global batch).
  void write_loss(double loss);
  // Gradient norm, clip factor for grad_clip (<= 0: none) and finiteness, into the figures.
  void grad_figures(double grad_clip);
  // AdamW with the figures' clip factor; leaves the model alone unless the figures are finite.
  void adamw_step(float lr, float weight_decay, int64_t step);
  StepFigures read_figures() const;

 private:
  struct BlockParams {
    const ParamInfo *ln1_w, *ln1_b, *qkv_w, *qkv_b, *proj_w, *proj_b, *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
  };
  // Activations in the backend's type; LayerNorm's statistics and what
  // attention saves stay fp32.
  struct BlockActs {
    BackendBuffer<Activation> x, ln1, qkv, att, res, ln2, h, g;
    BackendBuffer<float> ln1_mean, ln1_rstd, attn_saved, ln2_mean, ln2_rstd;
  };
  void add_param(std::string name, std::vector<int64_t> shape, bool decay);
  void layout_params();
  void allocate_activations();
  void forward(int batch);
  void backward(int batch);
  float* p(const ParamInfo* info) const { return params_buf_.get() + info->offset; }
  float* gp(const ParamInfo* info) const { return grads_buf_.get() + info->offset; }

  Backend& backend_;
  ModelSpec spec_;
  TubeletGrid grid_;
  int max_batch_;
  std::vector<ParamInfo> params_;
  size_t param_count_ = 0;
  const ParamInfo *embed_w_, *embed_b_, *pos_, *mask_token_, *norm_w_, *norm_b_, *head_w_, *head_b_;
  std::vector<BlockParams> block_params_;
  BackendBuffer<float> params_buf_, grads_buf_, m_buf_, v_buf_;
  // Two batches' windows and masks: one staged while the other trains.
  BackendBuffer<uint8_t> windows_[2], mask_[2];
  int staged_slot_ = 0, active_slot_ = 1, staged_batch_ = 0;
  BackendBuffer<StepFigures> figures_;
  BackendBuffer<Activation> patches_, emb_, final_x_, lnf_, pred_, dpred_;
  BackendBuffer<float> lnf_mean_, lnf_rstd_, attn_scratch_;
  // scratch_d_: projection outputs forward, [rows, dim] gradients backward.
  BackendBuffer<Activation> dres_, scratch_d_, dqkv_, dh_;
  std::vector<BlockActs> acts_;
};

}  // namespace kaio::train
