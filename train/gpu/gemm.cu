// Matrix products and the linear layer on top of them. One call site,
// gemm(): the vendor BLAS where the build found it (cuBLAS or rocBLAS
// strided-batched products, fp32 accumulation; bf16 operands when any matrix
// is bf16, reading bf16 activations in place and bf16 copies of fp32 weights),
// else a tiled GEMM (shared-memory 16x16 tiles, fp32 accumulation; bf16
// rounds the operands), which is also the only path for Debian's hipcc 5.2
// (no rocBLAS).
#include <memory>
#include <type_traits>

#include "kernels.h"

// After kernels.h, which names the namespace per vendor.
#include "linear_kernels.h"

namespace kaio_gpu {
namespace {

template <typename A, typename B, typename C>
int tiled_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const A* a, int lda, const B* b, int ldb,
               float beta, C* c, int ldc, const GemmBatch& batch) {
  const dim3 block(kTile, kTile), grid((n + kTile - 1) / kTile, (m + kTile - 1) / kTile, batch.count);
  tiled_gemm_kernel<<<grid, block, 0, compute_stream()>>>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                                                          ldc, batch);
  return check_launch("gemm");
}

#if defined(KAIO_VENDOR_BLAS)

// These own statics die at exit, possibly after the runtime's own teardown;
// then the process's device memory goes with the context and they let it be.
bool runtime_alive() {
  int device = 0;
  return gpuGetDevice(&device) == gpuSuccess;
}
struct BlasDestroy {
  void operator()(gpublasHandle_t handle) const noexcept {
    if (runtime_alive()) (void)gpublasDestroy(handle);
  }
};
struct DeviceFree {
  void operator()(void* ptr) const noexcept {
    if (runtime_alive()) (void)gpuFree(ptr);
  }
};

std::unique_ptr<std::remove_pointer_t<gpublasHandle_t>, BlasDestroy> g_blas;

// bf16 copies of fp32 operands (the weights, attention's probabilities) for
// bf16 products, grown on demand.
class Bf16Scratch {
 public:
  Bf16* reserve(size_t count) {
    if (count <= count_) return buffer_.get();
    buffer_.reset();
    count_ = 0;
    void* ptr = nullptr;
    if (check(gpuMalloc(&ptr, count * sizeof(Bf16)), "bf16 operand allocation")) return nullptr;
    buffer_.reset(static_cast<Bf16*>(ptr));
    count_ = count;
    return buffer_.get();
  }

 private:
  std::unique_ptr<Bf16, DeviceFree> buffer_;
  size_t count_ = 0;
};
Bf16Scratch g_bf16_a, g_bf16_b;

__global__ void to_bf16_kernel(Bf16* out, const float* in, size_t n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = bf16_of(in[i]);
}

int check_blas(gpublasStatus_t status, const char* what) {
  return status == GPUBLAS_STATUS_SUCCESS ? 0 : fail(what, gpublasGetStatusString(status));
}

// Elements from the operand's start to one past its last element over every
// batch (count is a multiple of inner): what a bf16 copy must cover.
size_t operand_span(int stored_rows, int stored_cols, int ld, const GemmBatch& batch, long outer, long inner_stride) {
  const long last = (long)((batch.count - 1) / batch.inner) * outer + (long)(batch.inner - 1) * inner_stride;
  return (size_t)(last + (long)(stored_rows - 1) * ld + stored_cols);
}

// The operand as bf16: a converted copy in `scratch`, same offsets.
const void* as_bf16(Bf16Scratch& scratch, const float* src, size_t span) {
  Bf16* dst = scratch.reserve(span);
  if (!dst) return nullptr;
  to_bf16_kernel<<<blocks_for(span, 256), 256, 0, compute_stream()>>>(dst, src, span);
  return check_launch("bf16 operand") ? nullptr : dst;
}

// The operand as the BLAS reads it: a Bf16 matrix as it is, an fp32 one as it
// is in fp32 products and as a bf16 copy in bf16 ones.
const void* blas_operand(Bf16Scratch&, const Bf16* src, size_t, bool) {
  return src;
}
const void* blas_operand(Bf16Scratch& scratch, const float* src, size_t span, bool bf16) {
  return bf16 ? as_bf16(scratch, src, span) : src;
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the
// operands swap and each keeps its own transpose flag. `count` products,
// each operand `stride` elements after the last.
int blas_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const void* a, int lda, long stride_a,
              const void* b, int ldb, long stride_b, float beta, void* c, bool c_bf16, int ldc, long stride_c,
              int count, bool bf16) {
  const auto type = bf16 ? GPUBLAS_R_16BF : GPUBLAS_R_32F;
  return check_blas(
      gpublasGemmStridedBatchedEx(g_blas.get(), trans_b ? GPUBLAS_OP_T : GPUBLAS_OP_N,
                                  trans_a ? GPUBLAS_OP_T : GPUBLAS_OP_N, n, m, k, &alpha, b, type, ldb, stride_b, a,
                                  type, lda, stride_a, &beta, c, c_bf16 ? GPUBLAS_R_16BF : GPUBLAS_R_32F, ldc, stride_c,
                                  count, GPUBLAS_COMPUTE_32F, GPUBLAS_GEMM_DEFAULT),
      "gemm (vendor BLAS)");
}

// Offsets `ptr` by `elements` of fp32 or bf16.
const void* advance(const void* ptr, long elements, bool bf16) {
  return static_cast<const char*>(ptr) + elements * (bf16 ? sizeof(Bf16) : sizeof(float));
}

// A one-stride batch (every linear layer; attention's probabilities) is one
// call; attention's (sample, head) batches over the packed qkv rows are one
// call per sample, strided over the heads.
template <typename A, typename B, typename C>
int vendor_gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const A* a, int lda, const B* b, int ldb,
                float beta, C* c, int ldc, const GemmBatch& batch) {
  constexpr bool bf16 = is_bf16<A> || is_bf16<B> || is_bf16<C>;
  const void* pa = blas_operand(
      g_bf16_a, a, operand_span(trans_a ? k : m, trans_a ? m : k, lda, batch, batch.a_outer, batch.a_inner), bf16);
  const void* pb = blas_operand(
      g_bf16_b, b, operand_span(trans_b ? n : k, trans_b ? k : n, ldb, batch, batch.b_outer, batch.b_inner), bf16);
  if (!pa || !pb) return -1;
  auto one_stride = [&](long outer, long inner_stride) {
    return batch.inner == 1 || outer == batch.inner * inner_stride;
  };
  if (one_stride(batch.a_outer, batch.a_inner) && one_stride(batch.b_outer, batch.b_inner) &&
      one_stride(batch.c_outer, batch.c_inner)) {
    auto stride = [&](long outer, long inner_stride) { return batch.inner == 1 ? outer : inner_stride; };
    return blas_gemm(trans_a, trans_b, m, n, k, alpha, pa, lda, stride(batch.a_outer, batch.a_inner), pb, ldb,
                     stride(batch.b_outer, batch.b_inner), beta, c, is_bf16<C>, ldc,
                     stride(batch.c_outer, batch.c_inner), batch.count, bf16);
  }
  for (int q = 0; q < batch.count / batch.inner; ++q)
    if (blas_gemm(trans_a, trans_b, m, n, k, alpha, advance(pa, q * batch.a_outer, bf16), lda, batch.a_inner,
                  advance(pb, q * batch.b_outer, bf16), ldb, batch.b_inner, beta, c + q * batch.c_outer, is_bf16<C>,
                  ldc, batch.c_inner, batch.inner, bf16))
      return -1;
  return 0;
}

#endif  // KAIO_VENDOR_BLAS

}  // namespace

int gemm_init() {
#if defined(KAIO_VENDOR_BLAS)
  if (g_blas) return 0;
  gpublasHandle_t handle = nullptr;
  if (check_blas(gpublasCreate(&handle), "create the vendor BLAS handle")) return -1;
  g_blas.reset(handle);
  return check_blas(gpublasSetStream(handle, compute_stream()), "vendor BLAS stream");
#else
  return 0;
#endif
}

const char* gemm_engine() {
#if defined(KAIO_VENDOR_BLAS)
  if (g_blas) return KAIO_VENDOR_BLAS_NAME;
#endif
  return "tiled kernel";
}

template <typename A, typename B, typename C>
int gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const A* a, int lda, const B* b, int ldb,
         float beta, C* c, int ldc, const GemmBatch& batch) {
#if defined(KAIO_VENDOR_BLAS)
  if (g_blas) return vendor_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch);
#endif
  return tiled_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch);
}

// fp32 throughout; and with bf16 activations: activation x weight into an
// activation, activation x activation into a weight gradient or attention's
// scores, probabilities x activation into an activation.
#define KAIO_GEMM(A, B, C)                                                                                   \
  template int gemm<A, B, C>(bool, bool, int, int, int, float, const A*, int, const B*, int, float, C*, int, \
                             const GemmBatch&);
KAIO_GEMM(float, float, float)
KAIO_GEMM(Bf16, float, Bf16)
KAIO_GEMM(Bf16, Bf16, float)
KAIO_GEMM(float, Bf16, Bf16)
#undef KAIO_GEMM

}  // namespace kaio_gpu

using namespace kaio_gpu;

namespace {

template <typename T>
int linear_forward_as(T* out, const T* in, const float* weight, const float* bias, int rows, int in_dim, int out_dim) {
  float beta = 0.0f;
  if (bias) {
    const size_t n = (size_t)rows * out_dim;
    broadcast_bias_kernel<<<blocks_for(n, 256), 256, 0, compute_stream()>>>(out, bias, rows, out_dim);
    beta = 1.0f;
  }
  return gemm(false, true, rows, out_dim, in_dim, 1.0f, in, in_dim, weight, in_dim, beta, out, out_dim, {});
}

template <typename T>
int linear_backward_as(T* din, float* dweight, float* dbias, const T* dout, const T* in, const float* weight, int rows,
                       int in_dim, int out_dim) {
  if (din && gemm(false, false, rows, in_dim, out_dim, 1.0f, dout, out_dim, weight, in_dim, 0.0f, din, in_dim, {}))
    return -1;
  if (gemm(true, false, out_dim, in_dim, rows, 1.0f, dout, out_dim, in, in_dim, 1.0f, dweight, in_dim, {})) return -1;
  if (dbias) column_sum_kernel<<<blocks_for(out_dim, 256), 256, 0, compute_stream()>>>(dbias, dout, rows, out_dim);
  return check_launch("linear_backward");
}

}  // namespace

extern "C" int KAIO_GPU_FN(linear_forward)(void* out, const void* in, const float* weight, const float* bias, int rows,
                                           int in_dim, int out_dim, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return linear_forward_as(as<T>(out), as<T>(in), weight, bias, rows, in_dim, out_dim);
  });
}

extern "C" int KAIO_GPU_FN(linear_backward)(void* din, float* dweight, float* dbias, const void* dout, const void* in,
                                            const float* weight, int rows, int in_dim, int out_dim, int bf16) {
  return with_activations(bf16, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return linear_backward_as(as<T>(din), dweight, dbias, as<T>(dout), as<T>(in), weight, rows, in_dim, out_dim);
  });
}
