// The hip and cuda backends: host code that drives the kernel library of
// train/gpu/ through its C table (gpu_api.h), so it compiles without GPU headers.
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "common/error.h"
#include "gpu_api.h"
#include "train/backend.h"
#include "train/bf16.h"

namespace kaio::train {
namespace {

static_assert(sizeof(StepFigures) == sizeof(KaioStepFigures) &&
                  offsetof(StepFigures, loss) == offsetof(KaioStepFigures, loss) &&
                  offsetof(StepFigures, grad_norm) == offsetof(KaioStepFigures, grad_norm) &&
                  offsetof(StepFigures, clip) == offsetof(KaioStepFigures, clip) &&
                  offsetof(StepFigures, finite) == offsetof(KaioStepFigures, finite),
              "StepFigures mirrors KaioStepFigures");

KaioStepFigures* kaio_figures(StepFigures* figures) {
  return reinterpret_cast<KaioStepFigures*>(figures);
}
const KaioStepFigures* kaio_figures(const StepFigures* figures) {
  return reinterpret_cast<const KaioStepFigures*>(figures);
}

// Frees a pinned buffer or destroys an event through the library that made it.
class PinnedDeleter {
 public:
  explicit PinnedDeleter(const KaioGpuOps* ops = nullptr) : ops_(ops) {}
  void operator()(uint8_t* ptr) const noexcept {
    if (ops_ && ptr) ops_->free_pinned(ptr);
  }

 private:
  const KaioGpuOps* ops_;
};
class EventDeleter {
 public:
  explicit EventDeleter(const KaioGpuOps* ops = nullptr) : ops_(ops) {}
  void operator()(void* event) const noexcept {
    if (ops_ && event) ops_->event_destroy(event);
  }

 private:
  const KaioGpuOps* ops_;
};
using PinnedBuffer = std::unique_ptr<uint8_t[], PinnedDeleter>;
using Event = std::unique_ptr<void, EventDeleter>;

class GpuBackend final : public Backend {
 public:
  GpuBackend(std::string vendor, const KaioGpuOps* ops, bool bf16)
      : vendor_(std::move(vendor)), ops_(ops), bf16_(bf16), fused_attention_(fused_attention_wanted()) {
    check(ops_->init(), "init");
    for (auto& staging : staging_) staging.copied = make_event();
    step_begin_ = make_event();
    step_end_ = make_event();
    previous_end_ = make_event();
  }
  std::string name() const override { return vendor_; }
  std::string device_name() const override { return ops_->device_name(); }

  void* allocate(size_t bytes) override {
    void* ptr = ops_->malloc_device(bytes);
    if (!ptr)
      throw Error(ErrorKind::io, vendor_ + ": out of device memory allocating " + std::to_string(bytes) + " bytes");
    return ptr;
  }
  void release(void* ptr) noexcept override { ops_->free_device(ptr); }
  void to_device(void* dst, const void* src, size_t bytes) override {
    check(ops_->to_device(dst, src, bytes), "to_device");
  }
  void to_host(void* dst, const void* src, size_t bytes) override { check(ops_->to_host(dst, src, bytes), "to_host"); }
  void zero(void* dst, size_t bytes) override { check(ops_->zero(dst, bytes), "zero"); }
  size_t activation_bytes() const override { return bf16_ ? sizeof(uint16_t) : sizeof(float); }
  void activations_to_device(Activation* dst, const float* src, size_t count) override {
    if (!bf16_) return to_device(dst, src, count * sizeof(float));
    std::vector<uint16_t> bits(count);
    for (size_t i = 0; i < count; ++i) bits[i] = bf16_bits(src[i]);
    to_device(dst, bits.data(), count * sizeof(uint16_t));
  }
  void activations_to_host(float* dst, const Activation* src, size_t count) override {
    if (!bf16_) return to_host(dst, src, count * sizeof(float));
    std::vector<uint16_t> bits(count);
    to_host(bits.data(), src, count * sizeof(uint16_t));
    for (size_t i = 0; i < count; ++i) dst[i] = bf16_value(bits[i]);
  }

  // Two pinned staging buffers used in turn: the copy of batch n+1 goes into
  // the buffer batch n is not using, on the copy stream; the host waits only
  // for the copy that last read the buffer it fills.
  void upload_batch(uint8_t* windows_dst, const uint8_t* windows, size_t window_bytes, uint8_t* mask_dst,
                    const uint8_t* mask, size_t mask_bytes) override {
    Staging& s = staging_[turn_++ % 2];
    check(ops_->event_synchronize(s.copied.get()), "wait for the staging buffer");
    const size_t need = window_bytes + mask_bytes;
    if (s.bytes < need) {
      s.ptr.reset(static_cast<uint8_t*>(ops_->malloc_pinned(need)));
      s.bytes = s.ptr ? need : 0;
      if (!s.ptr) throw Error(ErrorKind::io, vendor_ + ": cannot allocate " + std::to_string(need) + " pinned bytes");
    }
    std::memcpy(s.ptr.get(), windows, window_bytes);
    std::memcpy(s.ptr.get() + window_bytes, mask, mask_bytes);
    check(ops_->upload_pinned(windows_dst, s.ptr.get(), window_bytes), "upload windows");
    check(ops_->upload_pinned(mask_dst, s.ptr.get() + window_bytes, mask_bytes), "upload mask");
    check(ops_->event_record(s.copied.get(), 1), "record upload");
    last_upload_ = s.copied.get();
  }
  void await_upload() override {
    if (last_upload_) check(ops_->compute_wait(last_upload_), "wait for upload");
  }

  void patchify(Activation* patches, const uint8_t* windows, int batch, const TubeletGrid& g) override {
    check(ops_->patchify(patches, windows, batch, {g.frames, g.size, g.tubelet_frames, g.tubelet_size}, bf16_),
          "patchify");
  }
  void embed_combine_forward(Activation* x, const Activation* emb, const float* mask_token, const float* pos,
                             const uint8_t* mask, int batch, int tokens, int dim) override {
    check(ops_->embed_combine_forward(x, emb, mask_token, pos, mask, batch, tokens, dim, bf16_),
          "embed_combine_forward");
  }
  void embed_combine_backward(Activation* demb, float* dmask_token, float* dpos, const Activation* dx,
                              const uint8_t* mask, int batch, int tokens, int dim) override {
    check(ops_->embed_combine_backward(demb, dmask_token, dpos, dx, mask, batch, tokens, dim, bf16_),
          "embed_combine_backward");
  }
  void linear_forward(Activation* out, const Activation* in, const float* weight, const float* bias, int rows,
                      int in_dim, int out_dim) override {
    check(ops_->linear_forward(out, in, weight, bias, rows, in_dim, out_dim, bf16_), "linear_forward");
  }
  void linear_backward(Activation* din, float* dweight, float* dbias, const Activation* dout, const Activation* in,
                       const float* weight, int rows, int in_dim, int out_dim) override {
    check(ops_->linear_backward(din, dweight, dbias, dout, in, weight, rows, in_dim, out_dim, bf16_),
          "linear_backward");
  }
  void layernorm_forward(Activation* out, float* mean, float* rstd, const Activation* in, const float* weight,
                         const float* bias, int rows, int dim) override {
    check(ops_->layernorm_forward(out, mean, rstd, in, weight, bias, rows, dim, bf16_), "layernorm_forward");
  }
  void layernorm_backward(Activation* din, float* dweight, float* dbias, const Activation* dout, const Activation* in,
                          const float* weight, const float* mean, const float* rstd, int rows, int dim) override {
    check(ops_->layernorm_backward(din, dweight, dbias, dout, in, weight, mean, rstd, rows, dim, bf16_),
          "layernorm_backward");
  }
  size_t attention_saved_floats(const cpu::AttentionShape& s) const override {
    return fused(s) ? lse_floats(s) : Backend::attention_saved_floats(s);
  }
  size_t attention_scratch_floats(const cpu::AttentionShape& s) const override {
    return fused(s) ? lse_floats(s) : Backend::attention_scratch_floats(s);
  }
  void attention_forward(Activation* out, float* saved, const Activation* qkv, const cpu::AttentionShape& s) override {
    const auto forward = fused(s) ? ops_->attention_forward_fused : ops_->attention_forward;
    check(forward(out, saved, qkv, s.batch, s.tokens, s.heads, s.head_dim, bf16_), "attention_forward");
  }
  void attention_backward(Activation* dqkv, float* scratch, const Activation* dout, const Activation* out,
                          const Activation* qkv, const float* saved, const cpu::AttentionShape& s) override {
    if (fused(s))
      check(ops_->attention_backward_fused(dqkv, scratch, dout, out, qkv, saved, s.batch, s.tokens, s.heads, s.head_dim,
                                           bf16_),
            "attention_backward");
    else
      check(ops_->attention_backward(dqkv, scratch, dout, qkv, saved, s.batch, s.tokens, s.heads, s.head_dim, bf16_),
            "attention_backward");
  }
  void gelu_forward(Activation* out, const Activation* in, size_t n) override {
    check(ops_->gelu_forward(out, in, n, bf16_), "gelu_forward");
  }
  void gelu_backward(Activation* din, const Activation* dout, const Activation* in, size_t n) override {
    check(ops_->gelu_backward(din, dout, in, n, bf16_), "gelu_backward");
  }
  void add(Activation* out, const Activation* a, const Activation* b, size_t n) override {
    check(ops_->add(out, a, b, n, bf16_), "add");
  }
  double masked_mse(Activation* dpred, const Activation* pred, const Activation* patches, const uint8_t* mask, int rows,
                    int patch_dim) override {
    double loss = 0;
    check(ops_->masked_mse(&loss, dpred, pred, patches, mask, rows, patch_dim, bf16_), "masked_mse");
    return loss;
  }
  double sum_squares(const float* x, size_t n) override {
    double sum = 0;
    check(ops_->sum_squares(&sum, x, n), "sum_squares");
    return sum;
  }
  void adamw(float* param, const float* grad, float* m, float* v, size_t n, const AdamWStep& s) override {
    const auto [bc1, bc2_sqrt] = bias_corrections(s);
    check(ops_->adamw(param, grad, m, v, n, s.lr, s.beta1, s.beta2, s.eps, s.weight_decay, s.grad_scale, bc1, bc2_sqrt),
          "adamw");
  }
  void synchronize() override { check(ops_->synchronize(), "synchronize"); }

  void masked_mse_figures(StepFigures* figures, Activation* dpred, const Activation* pred, const Activation* patches,
                          const uint8_t* mask, int rows, int patch_dim) override {
    check(ops_->masked_mse_figures(kaio_figures(figures), dpred, pred, patches, mask, rows, patch_dim, bf16_),
          "masked_mse_figures");
  }
  void grad_figures(StepFigures* figures, const float* grad, size_t n, double max_norm) override {
    check(ops_->grad_figures(kaio_figures(figures), grad, n, max_norm), "grad_figures");
  }
  void adamw_figures(float* param, const float* grad, float* m, float* v, size_t n, const AdamWStep& s,
                     const StepFigures* figures) override {
    const auto [bc1, bc2_sqrt] = bias_corrections(s);
    check(ops_->adamw_figures(param, grad, m, v, n, s.lr, s.beta1, s.beta2, s.eps, s.weight_decay,
                              kaio_figures(figures), bc1, bc2_sqrt),
          "adamw_figures");
  }

  bool device_clock() const override { return true; }
  // A step begins once its batch is on the device: a copy it waits for counts as idle.
  void mark_step_begin() override {
    await_upload();
    check(ops_->event_record(step_begin_.get(), 0), "record step begin");
  }
  void mark_step_end() override { check(ops_->event_record(step_end_.get(), 0), "record step end"); }
  DeviceStepTime step_time() override {
    check(ops_->event_synchronize(step_end_.get()), "wait for step end");
    float busy_ms = 0, idle_ms = 0;
    check(ops_->event_elapsed_ms(&busy_ms, step_begin_.get(), step_end_.get()), "step time");
    if (timed_steps_++ > 0)
      check(ops_->event_elapsed_ms(&idle_ms, previous_end_.get(), step_begin_.get()), "idle time");
    std::swap(previous_end_, step_end_);
    return {busy_ms / 1e3, idle_ms / 1e3};
  }

 private:
  struct Staging {
    PinnedBuffer ptr;
    size_t bytes = 0;
    Event copied;  // recorded on the copy stream after the buffer's last copy
  };
  static std::pair<float, float> bias_corrections(const AdamWStep& s) {
    const double bc1 = 1.0 - std::pow(double(s.beta1), double(s.step));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(double(s.beta2), double(s.step)));
    return {static_cast<float>(bc1), static_cast<float>(bc2_sqrt)};
  }
  Event make_event() {
    Event event(ops_->event_create(), EventDeleter(ops_));
    if (!event) throw Error(ErrorKind::internal, vendor_ + " create event failed: " + ops_->last_error());
    return event;
  }
  // KAIO_FUSED_ATTENTION=1: attention through the fused kernels where they
  // are built for the head width (docs/training.md); the naive path stays the
  // default and the reference.
  static bool fused_attention_wanted() {
    const char* v = std::getenv("KAIO_FUSED_ATTENTION");
    return v && std::string(v) == "1";
  }
  bool fused(const cpu::AttentionShape& s) const {
    return fused_attention_ && ops_->attention_fused_supports(s.head_dim) != 0;
  }
  // One log-sum-exp (forward) or row dot (backward scratch) per (sample, head, query row).
  static size_t lse_floats(const cpu::AttentionShape& s) { return static_cast<size_t>(s.batch) * s.heads * s.tokens; }
  void check(int rc, const char* op) const {
    if (rc != 0) throw Error(ErrorKind::internal, vendor_ + " " + op + " failed: " + ops_->last_error());
  }

  std::string vendor_;
  const KaioGpuOps* ops_;
  int bf16_;
  bool fused_attention_;
  Staging staging_[2];
  unsigned turn_ = 0;
  void* last_upload_ = nullptr;  // the event of the last upload_batch's copy
  // Step timing on the compute stream; previous_end_ holds the last timed step's end.
  Event step_begin_, step_end_, previous_end_;
  int64_t timed_steps_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_gpu_backend(const std::string& vendor, bool bf16, std::string& why_not) {
#ifdef KAIO_HAVE_HIP
  if (vendor == "hip") {
    if (kaio_hip_device_count() == 0) return why_not = "no HIP device", nullptr;
    return std::make_unique<GpuBackend>(vendor, kaio_hip_ops(), bf16);
  }
#endif
#ifdef KAIO_HAVE_CUDA
  if (vendor == "cuda") {
    if (kaio_cuda_device_count() == 0) return why_not = "no CUDA device", nullptr;
    return std::make_unique<GpuBackend>(vendor, kaio_cuda_ops(), bf16);
  }
#endif
  (void)bf16;
  why_not = "built without " + vendor;
  return nullptr;
}

}  // namespace kaio::train
