#pragma once
// The C entry points of the kernel library, one set per vendor
// (kaio_hip_* and kaio_cuda_*), callable from plain C++ without GPU headers.
// Pointers in KaioGpuOps are device pointers; every op runs on the library's
// compute stream and returns 0 or a negative error code (message via last_error).
#include <stddef.h>
#include <stdint.h>

#if defined(KAIO_VENDOR_HIP)
#define KAIO_GPU_FN(name) kaio_hip_##name
#elif defined(KAIO_VENDOR_CUDA)
#define KAIO_GPU_FN(name) kaio_cuda_##name
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct KaioGpuGrid {
  int frames, size, tubelet_frames, tubelet_size;
} KaioGpuGrid;

// A step's figures in device memory (train/backend.h StepFigures mirrors it).
typedef struct KaioStepFigures {
  double loss;
  double grad_norm;
  float clip;
  int finite;
} KaioStepFigures;

typedef struct KaioGpuOps {
  const char* (*last_error)(void);
  int (*init)(void);                 // picks device 0, creates the compute and copy streams
  const char* (*device_name)(void);  // device 0's name, after init
  const char* (*gemm_engine)(void);  // what the matrix products run on: "cuBLAS" or "tiled kernel", after init
  void* (*malloc_device)(size_t bytes);
  void (*free_device)(void* ptr);
  void* (*malloc_pinned)(size_t bytes);
  void (*free_pinned)(void* ptr);
  int (*to_device)(void* dst, const void* src, size_t bytes);
  int (*to_host)(void* dst, const void* src, size_t bytes);
  int (*zero)(void* dst, size_t bytes);
  // Async copy from pinned memory on the copy stream; an event recorded there
  // after it and compute_wait order the compute stream after it.
  int (*upload_pinned)(void* dst, const void* pinned_src, size_t bytes);
  int (*synchronize)(void);
  // Activations and their gradients (the void pointers below) are fp32, or
  // bf16 where `bf16` is set, and then the matrix products take bf16 operands
  // (fp32 accumulation). Parameters, their gradients, LayerNorm's statistics
  // and attention's saved rows stay fp32.
  int (*patchify)(void* patches, const uint8_t* windows, int batch, KaioGpuGrid g, int bf16);
  int (*embed_combine_forward)(void* x, const void* emb, const float* mask_token, const float* pos, const uint8_t* mask,
                               int batch, int tokens, int dim, int bf16);
  int (*embed_combine_backward)(void* demb, float* dmask_token, float* dpos, const void* dx, const uint8_t* mask,
                                int batch, int tokens, int dim, int bf16);
  int (*linear_forward)(void* out, const void* in, const float* weight, const float* bias, int rows, int in_dim,
                        int out_dim, int bf16);
  int (*linear_backward)(void* din, float* dweight, float* dbias, const void* dout, const void* in, const float* weight,
                         int rows, int in_dim, int out_dim, int bf16);
  int (*layernorm_forward)(void* out, float* mean, float* rstd, const void* in, const float* weight, const float* bias,
                           int rows, int dim, int bf16);
  int (*layernorm_backward)(void* din, float* dweight, float* dbias, const void* dout, const void* in,
                            const float* weight, const float* mean, const float* rstd, int rows, int dim, int bf16);
  // The naive path, the reference: probs is [batch, heads, tokens, tokens]
  // and dprobs scratch of that size.
  int (*attention_forward)(void* out, float* probs, const void* qkv, int batch, int tokens, int heads, int head_dim,
                           int bf16);
  int (*attention_backward)(void* dqkv, float* dprobs, const void* dout, const void* qkv, const float* probs, int batch,
                            int tokens, int heads, int head_dim, int bf16);
  // The fused path (flash-style, no tokens x tokens matrix), for the head
  // widths attention_fused_supports() accepts: the forward keeps lse, the
  // log-sum-exp of each query row's scaled scores ([batch, heads, tokens]);
  // the backward reads it and the forward's output, with row_dots as scratch
  // of lse's size.
  int (*attention_fused_supports)(int head_dim);
  int (*attention_forward_fused)(void* out, float* lse, const void* qkv, int batch, int tokens, int heads, int head_dim,
                                 int bf16);
  int (*attention_backward_fused)(void* dqkv, float* row_dots, const void* dout, const void* out, const void* qkv,
                                  const float* lse, int batch, int tokens, int heads, int head_dim, int bf16);
  int (*gelu_forward)(void* out, const void* in, size_t n, int bf16);
  int (*gelu_backward)(void* din, const void* dout, const void* in, size_t n, int bf16);
  int (*add)(void* out, const void* a, const void* b, size_t n, int bf16);
  int (*masked_mse)(double* loss_host, void* dpred, const void* pred, const void* patches, const uint8_t* mask,
                    int rows, int patch_dim, int bf16);
  int (*sum_squares)(double* result_host, const float* x, size_t n);
  int (*adamw)(float* param, const float* grad, float* m, float* v, size_t n, float lr, float beta1, float beta2,
               float eps, float weight_decay, float grad_scale, float bias_correction1, float bias_correction2_sqrt);
  // Events on the library's streams: batch copies that overlap steps, and
  // step time on the device's clock. null from event_create on failure.
  void* (*event_create)(void);
  void (*event_destroy)(void* event);
  int (*event_record)(void* event, int on_copy_stream);  // else on the compute stream
  int (*event_synchronize)(void* event);                 // the host waits for it
  int (*event_elapsed_ms)(float* ms, void* start, void* end);
  int (*compute_wait)(void* event);  // the compute stream waits for it; the host does not
  // A step's ops with their figures in device memory, so the step never waits
  // for the host: masked_mse_figures writes the loss; grad_figures the norm,
  // clip factor (max_norm / (norm + 1e-6) above max_norm > 0, else 1) and
  // finite; adamw_figures scales the gradient by figures->clip and leaves
  // everything alone unless figures->finite.
  int (*masked_mse_figures)(KaioStepFigures* figures, void* dpred, const void* pred, const void* patches,
                            const uint8_t* mask, int rows, int patch_dim, int bf16);
  int (*grad_figures)(KaioStepFigures* figures, const float* grad, size_t n, double max_norm);
  int (*adamw_figures)(float* param, const float* grad, float* m, float* v, size_t n, float lr, float beta1,
                       float beta2, float eps, float weight_decay, const KaioStepFigures* figures,
                       float bias_correction1, float bias_correction2_sqrt);
} KaioGpuOps;

int kaio_hip_device_count(void);
int kaio_hip_axpy_host(int n, float a, const float* x, float* y);
const KaioGpuOps* kaio_hip_ops(void);
int kaio_cuda_device_count(void);
int kaio_cuda_axpy_host(int n, float a, const float* x, float* y);
const KaioGpuOps* kaio_cuda_ops(void);

#ifdef __cplusplus
}
#endif
