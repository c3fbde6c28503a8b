#pragma once
// Shared by the kernel sources (device side only): the library's streams, error
// recording, launch helpers, the activations' element type, block reductions
// sized by warpSize, and gemm(), the one call site of every matrix product.
#include <stddef.h>
#include <stdint.h>

#include <type_traits>

#include "gpu_api.h"
#include "vendor.h"

// Each vendor's library gets its own namespace so both can link into one program.
#if defined(KAIO_VENDOR_HIP)
#define kaio_gpu kaio_gpu_hip
#else
#define kaio_gpu kaio_gpu_cuda
#endif

// After the namespace's name: these open namespace kaio_gpu too.
#include "block_reduce.h"
#include "element.h"
#include "tiled_gemm.h"

namespace kaio_gpu {

gpuStream_t compute_stream();
gpuStream_t copy_stream();
// Records the error text for last_error() and returns -1; 0 on success.
int check(gpuError_t err, const char* what);
int check_launch(const char* what);
// Records "what: detail" for last_error() and returns -1.
int fail(const char* what, const char* detail);
// A device buffer of at least `count` floats, grown on demand, for partial sums.
float* scratch(size_t count);

inline unsigned blocks_for(size_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C, row-major with leading
// dimensions, fp32 accumulation. Each matrix is fp32 or Bf16; with any Bf16
// among them the product runs on bf16 operands (fp32 ones are rounded). Built
// for the combinations the layers use (gemm.cu).
template <typename A, typename B, typename C>
int gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const A* a, int lda, const B* b, int ldb,
         float beta, C* c, int ldc, const GemmBatch& batch);
// Creates the vendor BLAS handle on the compute stream where the build has one.
int gemm_init();
// What gemm() runs on: the vendor BLAS's name or "tiled kernel".
const char* gemm_engine();

// Calls f with a null pointer of the activations' element type (Bf16 when
// bf16, else float) and returns what it returns: the C entry points dispatch
// to their templates this way.
template <typename F>
auto with_activations(int bf16, F&& f) {
  return bf16 ? f(static_cast<Bf16*>(nullptr)) : f(static_cast<float*>(nullptr));
}
template <typename T>
T* as(void* ptr) {
  return static_cast<T*>(ptr);
}
template <typename T>
const T* as(const void* ptr) {
  return static_cast<const T*>(ptr);
}

}  // namespace kaio_gpu

// Per-op entry points, assembled into the vendor's KaioGpuOps table in device.cu.
extern "C" {
int KAIO_GPU_FN(patchify)(void*, const uint8_t*, int, KaioGpuGrid, int);
int KAIO_GPU_FN(embed_combine_forward)(void*, const void*, const float*, const float*, const uint8_t*, int, int, int,
                                       int);
int KAIO_GPU_FN(embed_combine_backward)(void*, float*, float*, const void*, const uint8_t*, int, int, int, int);
int KAIO_GPU_FN(linear_forward)(void*, const void*, const float*, const float*, int, int, int, int);
int KAIO_GPU_FN(linear_backward)(void*, float*, float*, const void*, const void*, const float*, int, int, int, int);
int KAIO_GPU_FN(layernorm_forward)(void*, float*, float*, const void*, const float*, const float*, int, int, int);
int KAIO_GPU_FN(layernorm_backward)(void*, float*, float*, const void*, const void*, const float*, const float*,
                                    const float*, int, int, int);
int KAIO_GPU_FN(attention_forward)(void*, float*, const void*, int, int, int, int, int);
int KAIO_GPU_FN(attention_backward)(void*, float*, const void*, const void*, const float*, int, int, int, int, int);
int KAIO_GPU_FN(attention_fused_supports)(int);
int KAIO_GPU_FN(attention_forward_fused)(void*, float*, const void*, int, int, int, int, int);
int KAIO_GPU_FN(attention_backward_fused)(void*, float*, const void*, const void*, const void*, const float*, int, int,
                                          int, int, int);
int KAIO_GPU_FN(gelu_forward)(void*, const void*, size_t, int);
int KAIO_GPU_FN(gelu_backward)(void*, const void*, const void*, size_t, int);
int KAIO_GPU_FN(add)(void*, const void*, const void*, size_t, int);
int KAIO_GPU_FN(masked_mse)(double*, void*, const void*, const void*, const uint8_t*, int, int, int);
int KAIO_GPU_FN(sum_squares)(double*, const float*, size_t);
int KAIO_GPU_FN(adamw)(float*, const float*, float*, float*, size_t, float, float, float, float, float, float, float,
                       float);
int KAIO_GPU_FN(masked_mse_figures)(KaioStepFigures*, void*, const void*, const void*, const uint8_t*, int, int, int);
int KAIO_GPU_FN(grad_figures)(KaioStepFigures*, const float*, size_t, double);
int KAIO_GPU_FN(adamw_figures)(float*, const float*, float*, float*, size_t, float, float, float, float, float,
                               const KaioStepFigures*, float, float);
}
