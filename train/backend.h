#pragma once
// One interface for the cpu, hip and cuda backends: memory plus the model's
// ops on backend pointers (host memory for cpu, device memory for GPUs). The
// model is written once against it; layers/ is the cpu implementation and
// gpu/*.cu the GPU one. Conventions follow the layers: parameter gradients
// accumulate, LayerNorm's input gradient accumulates, other input gradients
// are overwritten.
//
// Activations and their gradients (Activation*) are fp32, or bf16 on a GPU
// with train.bf16 (activation_bytes() 2): the model only passes them between
// ops, and tests move them as fp32 through activations_to_device/_to_host.
// Parameters, their gradients and moments, LayerNorm's statistics and
// attention's saved rows are fp32 (float*) on every backend.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "train/layers/adamw.h"
#include "train/layers/attention.h"
#include "train/layers/tubelet_embed.h"

namespace kaio::train {

// An element of activation memory: its type is the backend's (see above), so
// it is never dereferenced outside the backend.
struct Activation;

// A step's figures where the step computes them (device memory on GPUs), so a
// GPU step runs to its end without the host: the optimizer reads the clip
// factor there and skips its update when the step is not finite. Mirrors
// KaioStepFigures (train/gpu/gpu_api.h).
struct StepFigures {
  double loss;       // the batch's masked MSE
  double grad_norm;  // before clipping
  float clip;        // the gradient's scale in AdamW: max_norm / (norm + 1e-6) above max_norm, else 1
  int finite;        // loss and norm are finite: AdamW updates
};

// The device's own clock for one step (GPU events): busy from its begin to its
// end, idle between the previous step's end and its begin.
struct DeviceStepTime {
  double busy_seconds = 0, idle_seconds = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The device as its runtime names it ("NVIDIA H100 80GB HBM3"); "cpu" on the cpu backend.
  virtual std::string device_name() const = 0;

  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr) noexcept = 0;
  virtual void to_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* dst, size_t bytes) = 0;
  virtual size_t activation_bytes() const { return sizeof(float); }
  // `count` fp32 host values into activation memory and back, converted where
  // the backend keeps bf16.
  virtual void activations_to_device(Activation* dst, const float* src, size_t count) = 0;
  virtual void activations_to_host(float* dst, const Activation* src, size_t count) = 0;
  // Copies one batch of windows and masks into backend memory; GPUs go through
  // two pinned host buffers in turn (the host waits only for the copy that last
  // used the buffer it fills) and copy on a separate stream, so the copy runs
  // while the step in flight computes. The caller's memory is free on return.
  virtual void upload_batch(uint8_t* windows_dst, const uint8_t* windows, size_t window_bytes, uint8_t* mask_dst,
                            const uint8_t* mask, size_t mask_bytes) = 0;
  // The work queued next waits for the last upload_batch's copy (GPUs: the
  // compute stream waits on its event; the host does not wait).
  virtual void await_upload() = 0;

  virtual void patchify(Activation* patches, const uint8_t* windows, int batch, const TubeletGrid& g) = 0;
  virtual void embed_combine_forward(Activation* x, const Activation* emb, const float* mask_token, const float* pos,
                                     const uint8_t* mask, int batch, int tokens, int dim) = 0;
  virtual void embed_combine_backward(Activation* demb, float* dmask_token, float* dpos, const Activation* dx,
                                      const uint8_t* mask, int batch, int tokens, int dim) = 0;
  virtual void linear_forward(Activation* out, const Activation* in, const float* weight, const float* bias, int rows,
                              int in_dim, int out_dim) = 0;
  virtual void linear_backward(Activation* din, float* dweight, float* dbias, const Activation* dout,
                               const Activation* in, const float* weight, int rows, int in_dim, int out_dim) = 0;
  virtual void layernorm_forward(Activation* out, float* mean, float* rstd, const Activation* in, const float* weight,
                                 const float* bias, int rows, int dim) = 0;
  virtual void layernorm_backward(Activation* din, float* dweight, float* dbias, const Activation* dout,
                                  const Activation* in, const float* weight, const float* mean, const float* rstd,
                                  int rows, int dim) = 0;
  // Attention keeps `saved` from forward to backward: attention_saved_floats(s)
  // floats (the probabilities, B*H*T*T, on cpu and the GPUs' naive path; one
  // log-sum-exp per query row, B*H*T, on the fused path). The backward also
  // reads the forward's `out` and uses `scratch` of attention_scratch_floats(s).
  virtual size_t attention_saved_floats(const cpu::AttentionShape& s) const { return probs_floats(s); }
  virtual size_t attention_scratch_floats(const cpu::AttentionShape& s) const { return probs_floats(s); }
  virtual void attention_forward(Activation* out, float* saved, const Activation* qkv,
                                 const cpu::AttentionShape& s) = 0;
  virtual void attention_backward(Activation* dqkv, float* scratch, const Activation* dout, const Activation* out,
                                  const Activation* qkv, const float* saved, const cpu::AttentionShape& s) = 0;
  virtual void gelu_forward(Activation* out, const Activation* in, size_t n) = 0;
  virtual void gelu_backward(Activation* din, const Activation* dout, const Activation* in, size_t n) = 0;
  virtual void add(Activation* out, const Activation* a, const Activation* b, size_t n) = 0;
  virtual double masked_mse(Activation* dpred, const Activation* pred, const Activation* patches, const uint8_t* mask,
                            int rows, int patch_dim) = 0;
  virtual double sum_squares(const float* x, size_t n) = 0;
  virtual void adamw(float* param, const float* grad, float* m, float* v, size_t n, const AdamWStep& s) = 0;
  virtual void synchronize() = 0;

  // The step ops that keep their figures in backend memory (`figures` is a
  // StepFigures there): masked_mse writes figures->loss; grad_figures the
  // norm of `grad`, the clip factor for max_norm (<= 0: no clipping) and
  // finite; adamw_figures is adamw with s.grad_scale replaced by figures->clip
  // and nothing changed unless figures->finite.
  virtual void masked_mse_figures(StepFigures* figures, Activation* dpred, const Activation* pred,
                                  const Activation* patches, const uint8_t* mask, int rows, int patch_dim) = 0;
  virtual void grad_figures(StepFigures* figures, const float* grad, size_t n, double max_norm) = 0;
  virtual void adamw_figures(float* param, const float* grad, float* m, float* v, size_t n, const AdamWStep& s,
                             const StepFigures* figures) = 0;

  // GPUs time steps with events on the compute stream; the cpu backend has no
  // device clock (false) and its steps are timed on the host.
  virtual bool device_clock() const = 0;
  virtual void mark_step_begin() = 0;
  virtual void mark_step_end() = 0;
  // Waits for the last step's end mark: its busy time and the idle time since
  // the end mark before it (0 for the first step).
  virtual DeviceStepTime step_time() = 0;

 protected:
  static size_t probs_floats(const cpu::AttentionShape& s) {
    return static_cast<size_t>(s.batch) * s.heads * s.tokens * s.tokens;
  }
};

// Owns backend memory; frees it through the backend that allocated it.
class BackendDeleter {
 public:
  explicit BackendDeleter(Backend* backend = nullptr) : backend_(backend) {}
  void operator()(void* ptr) const noexcept {
    if (backend_ && ptr) backend_->release(ptr);
  }

 private:
  Backend* backend_;
};
template <typename T>
using BackendBuffer = std::unique_ptr<T[], BackendDeleter>;

template <typename T>
BackendBuffer<T> allocate_buffer(Backend& backend, size_t count) {
  return BackendBuffer<T>(static_cast<T*>(backend.allocate(count * sizeof(T))), BackendDeleter(&backend));
}
inline BackendBuffer<Activation> allocate_activations(Backend& backend, size_t count) {
  return BackendBuffer<Activation>(static_cast<Activation*>(backend.allocate(count * backend.activation_bytes())),
                                   BackendDeleter(&backend));
}

// threads = 0 uses every core.
std::unique_ptr<Backend> make_cpu_backend(int threads);
// bf16: activations stored as bf16 and bf16 products (train.bf16). Returns
// null with a reason in `why_not` when the vendor's backend is not built or
// no device is present.
std::unique_ptr<Backend> make_gpu_backend(const std::string& vendor, bool bf16, std::string& why_not);

}  // namespace kaio::train
