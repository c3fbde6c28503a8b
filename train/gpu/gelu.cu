// GELU (tanh approximation) and the residual add: elementwise.
#include <math.h>

#include "kernels.h"

// After kernels.h, which names the namespace per vendor.
#include "gelu_kernels.h"

using namespace kaio_gpu;

extern "C" int KAIO_GPU_FN(gelu_forward)(void* out, const void* in, size_t n, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    gelu_forward_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(as<T>(out), as<T>(in), n);
    return check_launch("gelu_forward");
  });
}
extern "C" int KAIO_GPU_FN(gelu_backward)(void* din, const void* dout, const void* in, size_t n, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    gelu_backward_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(as<T>(din), as<T>(dout), as<T>(in), n);
    return check_launch("gelu_backward");
  });
}
extern "C" int KAIO_GPU_FN(add)(void* out, const void* a, const void* b, size_t n, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    add_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(as<T>(out), as<T>(a), as<T>(b), n);
    return check_launch("add");
  });
}
