// LayerNorm over the last dimension: one block per row forward and for the
// input gradient; one thread per column for the parameter gradients.
#include <math.h>

#include "kernels.h"

// After kernels.h, which names the namespace per vendor.
#include "layernorm_kernels.h"

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(layernorm_forward)(void* out, float* mean, float* rstd, const void* in, const float* w,
                                              const float* b, int rows, int dim, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    layernorm_forward_kernel<<<rows, 256, 0, compute_stream()>>>(as<T>(out), mean, rstd, as<T>(in), w, b, dim);
    return check_launch("layernorm_forward");
  });
}

extern "C" int KAIO_GPU_FN(layernorm_backward)(void* din, float* dw, float* db, const void* dout, const void* in,
                                               const float* w, const float* mean, const float* rstd, int rows, int dim,
                                               int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    layernorm_input_grad_kernel<<<rows, 256, 0, compute_stream()>>>(as<T>(din), as<T>(dout), as<T>(in), w, mean, rstd,
                                                                    dim);
    layernorm_param_grad_kernel<<<blocks_for(dim, 128), 128, 0, compute_stream()>>>(dw, db, as<T>(dout), as<T>(in),
                                                                                    mean, rstd, rows, dim);
    return check_launch("layernorm_backward");
  });
}
