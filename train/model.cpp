#include "train/model.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "common/error.h"

namespace kaio::train {
namespace {

// splitmix64 over a state mixed from three words; cheap, portable and easy to
// mirror in Python for the reference test.
class SplitMix {
 public:
  SplitMix(uint64_t a, uint64_t b, uint64_t c)
      : state_(a * 0x9E3779B97F4A7C15ULL + b * 0xBF58476D1CE4E5B9ULL + c * 0x94D049BB133111EBULL) {}
  uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ULL;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>((next() >> 11) + 1) * 0x1.0p-53; }  // (0, 1]
  double normal() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); }

 private:
  uint64_t state_;
};

constexpr uint64_t kInitStream = 0x1000000;
constexpr float kAdamBeta1 = 0.9f, kAdamBeta2 = 0.95f, kAdamEps = 1e-8f;

}  // namespace

ModelSpec model_spec(std::string_view name) {
  if (name == "tiny") return {"tiny", 64, 2, 4, 2, 8};
  if (name == "small") return {"small", 384, 12, 6, 2, 16};
  if (name == "base") return {"base", 768, 12, 12, 2, 16};
  throw Error(ErrorKind::config, "train.model: unknown model '" + std::string(name) + "' (tiny, small, base)");
}

TubeletGrid make_grid(const ModelSpec& spec, int frames, int size) {
  TubeletGrid g{frames, size, spec.tubelet_frames, spec.tubelet_size};
  if (frames <= 0 || size <= 0 || frames % spec.tubelet_frames || size % spec.tubelet_size)
    throw Error(ErrorKind::config, "decode.frames/decode.size: window " + std::to_string(frames) + "x" +
                                       std::to_string(size) + " does not tile into " + spec.name + "'s " +
                                       std::to_string(spec.tubelet_frames) + "x" + std::to_string(spec.tubelet_size) +
                                       " tubelets");
  return g;
}

std::vector<uint8_t> tube_mask(const TubeletGrid& g, int batch, double ratio, uint64_t seed, int64_t step) {
  const int spatial = g.grid_hw() * g.grid_hw();
  const int masked = std::clamp(static_cast<int>(std::lround(ratio * spatial)), 0, spatial);
  std::vector<uint8_t> mask(static_cast<size_t>(batch) * g.tokens(), 0);
  std::vector<int> order(spatial);
  for (int b = 0; b < batch; ++b) {
    SplitMix rng(seed, static_cast<uint64_t>(step), static_cast<uint64_t>(b));
    std::iota(order.begin(), order.end(), 0);
    for (int i = 0; i < masked; ++i) {
      const int j = i + static_cast<int>(rng.next() % static_cast<uint64_t>(spatial - i));
      std::swap(order[i], order[j]);
    }
    for (int i = 0; i < masked; ++i)
      for (int t = 0; t < g.grid_t(); ++t)
        mask[static_cast<size_t>(b) * g.tokens() + static_cast<size_t>(t) * spatial + order[i]] = 1;
  }
  return mask;
}

Model::Model(Backend& backend, const ModelSpec& spec, const TubeletGrid& grid, int max_batch)
    : backend_(backend), spec_(spec), grid_(grid), max_batch_(max_batch) {
  if (spec.dim % spec.heads)
    throw Error(ErrorKind::config, "train.model: dim " + std::to_string(spec.dim) + " is not divisible by heads");
  layout_params();
  params_buf_ = allocate_buffer<float>(backend_, param_count_);
  grads_buf_ = allocate_buffer<float>(backend_, param_count_);
  m_buf_ = allocate_buffer<float>(backend_, param_count_);
  v_buf_ = allocate_buffer<float>(backend_, param_count_);
  backend_.zero(grads_buf_.get(), param_count_ * sizeof(float));
  backend_.zero(m_buf_.get(), param_count_ * sizeof(float));
  backend_.zero(v_buf_.get(), param_count_ * sizeof(float));
  allocate_activations();
}

void Model::add_param(std::string name, std::vector<int64_t> shape, bool decay) {
  const size_t count = std::accumulate(shape.begin(), shape.end(), size_t{1},
                                       [](size_t a, int64_t b) { return a * static_cast<size_t>(b); });
  params_.push_back({std::move(name), std::move(shape), param_count_, count, decay});
  param_count_ += count;
}

void Model::layout_params() {
  const int64_t d = spec_.dim, pd = grid_.patch_dim(), n = grid_.tokens();
  add_param("patch_embed.weight", {d, pd}, true);
  add_param("patch_embed.bias", {d}, false);
  add_param("pos_embed", {n, d}, false);
  add_param("mask_token", {d}, false);
  for (int l = 0; l < spec_.depth; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".";
    add_param(b + "norm1.weight", {d}, false);
    add_param(b + "norm1.bias", {d}, false);
    add_param(b + "attn.qkv.weight", {3 * d, d}, true);
    add_param(b + "attn.qkv.bias", {3 * d}, false);
    add_param(b + "attn.proj.weight", {d, d}, true);
    add_param(b + "attn.proj.bias", {d}, false);
    add_param(b + "norm2.weight", {d}, false);
    add_param(b + "norm2.bias", {d}, false);
    add_param(b + "mlp.fc1.weight", {4 * d, d}, true);
    add_param(b + "mlp.fc1.bias", {4 * d}, false);
    add_param(b + "mlp.fc2.weight", {d, 4 * d}, true);
    add_param(b + "mlp.fc2.bias", {d}, false);
  }
  add_param("norm.weight", {d}, false);
  add_param("norm.bias", {d}, false);
  add_param("head.weight", {pd, d}, true);
  add_param("head.bias", {pd}, false);
  // Resolve pointers only now: params_ no longer grows.
  embed_w_ = &param("patch_embed.weight");
  embed_b_ = &param("patch_embed.bias");
  pos_ = &param("pos_embed");
  mask_token_ = &param("mask_token");
  norm_w_ = &param("norm.weight");
  norm_b_ = &param("norm.bias");
  head_w_ = &param("head.weight");
  head_b_ = &param("head.bias");
  for (int l = 0; l < spec_.depth; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".";
    block_params_.push_back({&param(b + "norm1.weight"), &param(b + "norm1.bias"), &param(b + "attn.qkv.weight"),
                             &param(b + "attn.qkv.bias"), &param(b + "attn.proj.weight"), &param(b + "attn.proj.bias"),
                             &param(b + "norm2.weight"), &param(b + "norm2.bias"), &param(b + "mlp.fc1.weight"),
                             &param(b + "mlp.fc1.bias"), &param(b + "mlp.fc2.weight"), &param(b + "mlp.fc2.bias")});
  }
}

const ParamInfo& Model::param(std::string_view name) const {
  for (const auto& info : params_)
    if (info.name == name) return info;
  throw Error(ErrorKind::internal, "model " + spec_.name + " has no parameter '" + std::string(name) + "'");
}

void Model::allocate_activations() {
  const size_t rows = static_cast<size_t>(max_batch_) * grid_.tokens(), d = spec_.dim;
  // Per layer only what the backend's attention keeps (probabilities or one
  // log-sum-exp per row), sized for the largest batch.
  const cpu::AttentionShape attention{max_batch_, grid_.tokens(), spec_.heads, spec_.dim / spec_.heads};
  const size_t saved = backend_.attention_saved_floats(attention);
  auto f = [&](size_t n) { return allocate_buffer<float>(backend_, n); };
  auto act = [&](size_t n) { return train::allocate_activations(backend_, n); };
  for (int slot = 0; slot < 2; ++slot) {
    windows_[slot] = allocate_buffer<uint8_t>(backend_, max_batch_ * grid_.window_bytes());
    mask_[slot] = allocate_buffer<uint8_t>(backend_, rows);
  }
  figures_ = allocate_buffer<StepFigures>(backend_, 1);
  backend_.zero(figures_.get(), sizeof(StepFigures));
  patches_ = act(rows * grid_.patch_dim());
  emb_ = act(rows * d);
  for (int l = 0; l < spec_.depth; ++l) {
    BlockActs& a = acts_.emplace_back();
    a.x = act(rows * d);
    a.ln1 = act(rows * d);
    a.ln1_mean = f(rows);
    a.ln1_rstd = f(rows);
    a.qkv = act(rows * 3 * d);
    a.att = act(rows * d);
    a.attn_saved = f(saved);
    a.res = act(rows * d);
    a.ln2 = act(rows * d);
    a.ln2_mean = f(rows);
    a.ln2_rstd = f(rows);
    a.h = act(rows * 4 * d);
    a.g = act(rows * 4 * d);
  }
  final_x_ = act(rows * d);
  lnf_ = act(rows * d);
  lnf_mean_ = f(rows);
  lnf_rstd_ = f(rows);
  pred_ = act(rows * grid_.patch_dim());
  dpred_ = act(rows * grid_.patch_dim());
  dres_ = act(rows * d);
  scratch_d_ = act(rows * d);
  dqkv_ = act(rows * 3 * d);
  attn_scratch_ = f(backend_.attention_scratch_floats(attention));
  dh_ = act(rows * 4 * d);
}

void Model::init_weights(uint64_t seed) {
  std::vector<float> host(param_count_, 0.0f);
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamInfo& info = params_[i];
    const bool is_norm_weight = info.name.find("norm") != std::string::npos && info.name.ends_with(".weight");
    if (is_norm_weight) {
      std::fill_n(host.begin() + info.offset, info.count, 1.0f);
    } else if (!info.name.ends_with(".bias")) {
      SplitMix rng(seed, kInitStream + i, 0);
      for (size_t k = 0; k < info.count; ++k) host[info.offset + k] = static_cast<float>(0.02 * rng.normal());
    }
  }
  write_params(host.data());
}

void Model::read_params(float* host) const {
  backend_.to_host(host, params_buf_.get(), param_count_ * sizeof(float));
}
void Model::write_params(const float* host) {
  backend_.to_device(params_buf_.get(), host, param_count_ * sizeof(float));
}
void Model::read_grads(float* host) const {
  backend_.to_host(host, grads_buf_.get(), param_count_ * sizeof(float));
}
void Model::write_grads(const float* host) {
  backend_.to_device(grads_buf_.get(), host, param_count_ * sizeof(float));
}
void Model::read_moments(float* host_m, float* host_v) const {
  backend_.to_host(host_m, m_buf_.get(), param_count_ * sizeof(float));
  backend_.to_host(host_v, v_buf_.get(), param_count_ * sizeof(float));
}
void Model::write_moments(const float* host_m, const float* host_v) {
  backend_.to_device(m_buf_.get(), host_m, param_count_ * sizeof(float));
  backend_.to_device(v_buf_.get(), host_v, param_count_ * sizeof(float));
}

void Model::stage(const uint8_t* windows, const uint8_t* mask, int batch) {
  if (batch <= 0 || batch > max_batch_)
    throw Error(ErrorKind::internal, "batch of " + std::to_string(batch) + " windows exceeds train.batch_size " +
                                         std::to_string(max_batch_));
  staged_slot_ = 1 - active_slot_;
  staged_batch_ = batch;
  backend_.upload_batch(windows_[staged_slot_].get(), windows, batch * grid_.window_bytes(), mask_[staged_slot_].get(),
                        mask, static_cast<size_t>(batch) * grid_.tokens());
}

void Model::forward_backward() {
  if (staged_batch_ == 0) throw Error(ErrorKind::internal, "forward_backward without a staged batch");
  const int batch = std::exchange(staged_batch_, 0);
  active_slot_ = staged_slot_;
  const size_t rows = static_cast<size_t>(batch) * grid_.tokens();
  backend_.await_upload();
  backend_.zero(grads_buf_.get(), param_count_ * sizeof(float));
  forward(batch);
  backend_.masked_mse_figures(figures_.get(), dpred_.get(), pred_.get(), patches_.get(), mask_[active_slot_].get(),
                              static_cast<int>(rows), grid_.patch_dim());
  backward(batch);
}

double Model::forward_backward(const uint8_t* windows, const uint8_t* mask, int batch) {
  stage(windows, mask, batch);
  forward_backward();
  return read_figures().loss;
}

void Model::forward(int batch) {
  const int rows = batch * grid_.tokens(), d = spec_.dim, pd = grid_.patch_dim();
  const size_t n = static_cast<size_t>(rows) * d;
  const cpu::AttentionShape shape{batch, grid_.tokens(), spec_.heads, d / spec_.heads};
  backend_.patchify(patches_.get(), windows_[active_slot_].get(), batch, grid_);
  backend_.linear_forward(emb_.get(), patches_.get(), p(embed_w_), p(embed_b_), rows, pd, d);
  backend_.embed_combine_forward(acts_[0].x.get(), emb_.get(), p(mask_token_), p(pos_), mask_[active_slot_].get(),
                                 batch, grid_.tokens(), d);
  for (int l = 0; l < spec_.depth; ++l) {
    BlockActs& a = acts_[l];
    const BlockParams& w = block_params_[l];
    Activation* next_x = l + 1 < spec_.depth ? acts_[l + 1].x.get() : final_x_.get();
    backend_.layernorm_forward(a.ln1.get(), a.ln1_mean.get(), a.ln1_rstd.get(), a.x.get(), p(w.ln1_w), p(w.ln1_b), rows,
                               d);
    backend_.linear_forward(a.qkv.get(), a.ln1.get(), p(w.qkv_w), p(w.qkv_b), rows, d, 3 * d);
    backend_.attention_forward(a.att.get(), a.attn_saved.get(), a.qkv.get(), shape);
    backend_.linear_forward(scratch_d_.get(), a.att.get(), p(w.proj_w), p(w.proj_b), rows, d, d);
    backend_.add(a.res.get(), a.x.get(), scratch_d_.get(), n);
    backend_.layernorm_forward(a.ln2.get(), a.ln2_mean.get(), a.ln2_rstd.get(), a.res.get(), p(w.ln2_w), p(w.ln2_b),
                               rows, d);
    backend_.linear_forward(a.h.get(), a.ln2.get(), p(w.fc1_w), p(w.fc1_b), rows, d, 4 * d);
    backend_.gelu_forward(a.g.get(), a.h.get(), n * 4);
    backend_.linear_forward(scratch_d_.get(), a.g.get(), p(w.fc2_w), p(w.fc2_b), rows, 4 * d, d);
    backend_.add(next_x, a.res.get(), scratch_d_.get(), n);
  }
  backend_.layernorm_forward(lnf_.get(), lnf_mean_.get(), lnf_rstd_.get(), final_x_.get(), p(norm_w_), p(norm_b_), rows,
                             d);
  backend_.linear_forward(pred_.get(), lnf_.get(), p(head_w_), p(head_b_), rows, d, pd);
}

void Model::backward(int batch) {
  const int rows = batch * grid_.tokens(), d = spec_.dim, pd = grid_.patch_dim();
  const size_t n = static_cast<size_t>(rows) * d;
  const cpu::AttentionShape shape{batch, grid_.tokens(), spec_.heads, d / spec_.heads};
  backend_.linear_backward(scratch_d_.get(), gp(head_w_), gp(head_b_), dpred_.get(), lnf_.get(), p(head_w_), rows, d,
                           pd);
  backend_.zero(dres_.get(), n * backend_.activation_bytes());
  backend_.layernorm_backward(dres_.get(), gp(norm_w_), gp(norm_b_), scratch_d_.get(), final_x_.get(), p(norm_w_),
                              lnf_mean_.get(), lnf_rstd_.get(), rows, d);
  for (int l = spec_.depth - 1; l >= 0; --l) {
    BlockActs& a = acts_[l];
    const BlockParams& w = block_params_[l];
    backend_.linear_backward(dh_.get(), gp(w.fc2_w), gp(w.fc2_b), dres_.get(), a.g.get(), p(w.fc2_w), rows, 4 * d, d);
    backend_.gelu_backward(dh_.get(), dh_.get(), a.h.get(), n * 4);
    backend_.linear_backward(scratch_d_.get(), gp(w.fc1_w), gp(w.fc1_b), dh_.get(), a.ln2.get(), p(w.fc1_w), rows, d,
                             4 * d);
    backend_.layernorm_backward(dres_.get(), gp(w.ln2_w), gp(w.ln2_b), scratch_d_.get(), a.res.get(), p(w.ln2_w),
                                a.ln2_mean.get(), a.ln2_rstd.get(), rows, d);
    backend_.linear_backward(scratch_d_.get(), gp(w.proj_w), gp(w.proj_b), dres_.get(), a.att.get(), p(w.proj_w), rows,
                             d, d);
    backend_.attention_backward(dqkv_.get(), attn_scratch_.get(), scratch_d_.get(), a.att.get(), a.qkv.get(),
                                a.attn_saved.get(), shape);
    backend_.linear_backward(scratch_d_.get(), gp(w.qkv_w), gp(w.qkv_b), dqkv_.get(), a.ln1.get(), p(w.qkv_w), rows, d,
                             3 * d);
    backend_.layernorm_backward(dres_.get(), gp(w.ln1_w), gp(w.ln1_b), scratch_d_.get(), a.x.get(), p(w.ln1_w),
                                a.ln1_mean.get(), a.ln1_rstd.get(), rows, d);
  }
  backend_.embed_combine_backward(scratch_d_.get(), gp(mask_token_), gp(pos_), dres_.get(), mask_[active_slot_].get(),
                                  batch, grid_.tokens(), d);
  backend_.linear_backward(nullptr, gp(embed_w_), gp(embed_b_), scratch_d_.get(), patches_.get(), p(embed_w_), rows, pd,
                           d);
}

void Model::write_loss(double loss) {
  backend_.to_device(&figures_.get()->loss, &loss, sizeof(loss));
}

void Model::grad_figures(double grad_clip) {
  backend_.grad_figures(figures_.get(), grads_buf_.get(), param_count_, grad_clip);
}

void Model::adamw_step(float lr, float weight_decay, int64_t step) {
  for (const ParamInfo& info : params_) {
    const AdamWStep s{lr, kAdamBeta1, kAdamBeta2, kAdamEps, info.decay ? weight_decay : 0.0f, 1.0f, step};
    backend_.adamw_figures(params_buf_.get() + info.offset, grads_buf_.get() + info.offset, m_buf_.get() + info.offset,
                           v_buf_.get() + info.offset, info.count, s, figures_.get());
  }
}

StepFigures Model::read_figures() const {
  StepFigures host{};
  backend_.to_host(&host, figures_.get(), sizeof(host));
  return host;
}

}  // namespace kaio::train
