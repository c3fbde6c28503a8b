// The cpu backend: host memory and the reference layers in layers/.
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "train/backend.h"
#include "train/layers/gelu.h"
#include "train/layers/layernorm.h"
#include "train/layers/linear.h"
#include "train/layers/masked_mse.h"

extern "C" void openblas_set_num_threads(int threads);

namespace kaio::train {
namespace {

class CpuBackend final : public Backend {
 public:
  // One thread pool: OpenMP splits the work and OpenBLAS runs single-threaded
  // inside each slice (two spinning pools on the same cores cost 10x here).
  explicit CpuBackend(int threads) {
    if (threads > 0) omp_set_num_threads(threads);
    openblas_set_num_threads(1);
  }
  std::string name() const override { return "cpu"; }
  std::string device_name() const override { return "cpu"; }

  // The Backend interface's raw memory: BackendBuffer owns it and frees it through release().
  void* allocate(size_t bytes) override {
    // NOLINTNEXTLINE(cppcoreguidelines-owning-memory,cppcoreguidelines-no-malloc): see above
    void* ptr = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!ptr) throw std::bad_alloc();
    return ptr;
  }
  // NOLINTNEXTLINE(cppcoreguidelines-owning-memory,cppcoreguidelines-no-malloc): see allocate()
  void release(void* ptr) noexcept override { std::free(ptr); }
  void to_device(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void zero(void* dst, size_t bytes) override { std::memset(dst, 0, bytes); }
  void upload_batch(uint8_t* windows_dst, const uint8_t* windows, size_t window_bytes, uint8_t* mask_dst,
                    const uint8_t* mask, size_t mask_bytes) override {
    std::memcpy(windows_dst, windows, window_bytes);
    std::memcpy(mask_dst, mask, mask_bytes);
  }
  void await_upload() override {}

  void activations_to_device(Activation* dst, const float* src, size_t count) override {
    std::memcpy(dst, src, count * sizeof(float));
  }
  void activations_to_host(float* dst, const Activation* src, size_t count) override {
    std::memcpy(dst, src, count * sizeof(float));
  }

  void patchify(Activation* patches, const uint8_t* windows, int batch, const TubeletGrid& g) override {
    cpu::patchify(f(patches), windows, batch, g);
  }
  void embed_combine_forward(Activation* x, const Activation* emb, const float* mask_token, const float* pos,
                             const uint8_t* mask, int batch, int tokens, int dim) override {
    cpu::embed_combine_forward(f(x), f(emb), mask_token, pos, mask, batch, tokens, dim);
  }
  void embed_combine_backward(Activation* demb, float* dmask_token, float* dpos, const Activation* dx,
                              const uint8_t* mask, int batch, int tokens, int dim) override {
    cpu::embed_combine_backward(f(demb), dmask_token, dpos, f(dx), mask, batch, tokens, dim);
  }
  void linear_forward(Activation* out, const Activation* in, const float* weight, const float* bias, int rows,
                      int in_dim, int out_dim) override {
    cpu::linear_forward(f(out), f(in), weight, bias, rows, in_dim, out_dim);
  }
  void linear_backward(Activation* din, float* dweight, float* dbias, const Activation* dout, const Activation* in,
                       const float* weight, int rows, int in_dim, int out_dim) override {
    cpu::linear_backward(f(din), dweight, dbias, f(dout), f(in), weight, rows, in_dim, out_dim);
  }
  void layernorm_forward(Activation* out, float* mean, float* rstd, const Activation* in, const float* weight,
                         const float* bias, int rows, int dim) override {
    cpu::layernorm_forward(f(out), mean, rstd, f(in), weight, bias, rows, dim);
  }
  void layernorm_backward(Activation* din, float* dweight, float* dbias, const Activation* dout, const Activation* in,
                          const float* weight, const float* mean, const float* rstd, int rows, int dim) override {
    cpu::layernorm_backward(f(din), dweight, dbias, f(dout), f(in), weight, mean, rstd, rows, dim);
  }
  void attention_forward(Activation* out, float* probs, const Activation* qkv, const cpu::AttentionShape& s) override {
    cpu::attention_forward(f(out), probs, f(qkv), s);
  }
  void attention_backward(Activation* dqkv, float* dprobs, const Activation* dout, const Activation* /*out*/,
                          const Activation* qkv, const float* probs, const cpu::AttentionShape& s) override {
    cpu::attention_backward(f(dqkv), dprobs, f(dout), f(qkv), probs, s);
  }
  void gelu_forward(Activation* out, const Activation* in, size_t n) override { cpu::gelu_forward(f(out), f(in), n); }
  void gelu_backward(Activation* din, const Activation* dout, const Activation* in, size_t n) override {
    cpu::gelu_backward(f(din), f(dout), f(in), n);
  }
  void add(Activation* out, const Activation* a, const Activation* b, size_t n) override {
    float* y = f(out);
    const float *x0 = f(a), *x1 = f(b);
#pragma omp parallel for
    for (size_t i = 0; i < n; ++i) y[i] = x0[i] + x1[i];
  }
  double masked_mse(Activation* dpred, const Activation* pred, const Activation* patches, const uint8_t* mask, int rows,
                    int patch_dim) override {
    return cpu::masked_mse_forward_backward(f(dpred), f(pred), f(patches), mask, rows, patch_dim);
  }
  double sum_squares(const float* x, size_t n) override {
    double sum = 0.0;
#pragma omp parallel for reduction(+ : sum)
    for (size_t i = 0; i < n; ++i) sum += double(x[i]) * x[i];
    return sum;
  }
  void adamw(float* param, const float* grad, float* m, float* v, size_t n, const AdamWStep& s) override {
    cpu::adamw_update(param, grad, m, v, n, s);
  }
  void synchronize() override {}

  // The same arithmetic as the trainer's host figures before them, so cpu steps stay bit-identical.
  void masked_mse_figures(StepFigures* figures, Activation* dpred, const Activation* pred, const Activation* patches,
                          const uint8_t* mask, int rows, int patch_dim) override {
    figures->loss = masked_mse(dpred, pred, patches, mask, rows, patch_dim);
  }
  void grad_figures(StepFigures* figures, const float* grad, size_t n, double max_norm) override {
    const double norm = std::sqrt(sum_squares(grad, n));
    figures->grad_norm = norm;
    figures->clip = static_cast<float>(max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0);
    figures->finite = std::isfinite(figures->loss) && std::isfinite(norm) ? 1 : 0;
  }
  void adamw_figures(float* param, const float* grad, float* m, float* v, size_t n, const AdamWStep& s,
                     const StepFigures* figures) override {
    if (!figures->finite) return;
    AdamWStep scaled = s;
    scaled.grad_scale = figures->clip;
    adamw(param, grad, m, v, n, scaled);
  }

  bool device_clock() const override {
    return false;
  }
  void mark_step_begin() override {}
  void mark_step_end() override {}
  DeviceStepTime step_time() override {
    return {};
  }

 private:
  // Activations are fp32 here.
  static float* f(Activation* a) {
    return reinterpret_cast<float*>(a);
  }
  static const float* f(const Activation* a) {
    return reinterpret_cast<const float*>(a);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace kaio::train
