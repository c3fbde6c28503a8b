#pragma once
// Declarations only, with the signatures and enum values of rocBLAS's
// reference, for what train/gpu/vendor.h uses: train/CMakeLists.txt compiles
// gemm.cu's rocBLAS path against this where ROCm has no rocBLAS (Debian's
// hipcc 5.2), so a change that breaks that path fails the build. Never linked.
#include <hip/hip_runtime.h>
#include <stdint.h>

typedef struct _rocblas_handle* rocblas_handle;
typedef int32_t rocblas_int;
typedef int64_t rocblas_stride;
typedef enum rocblas_status_ { rocblas_status_success = 0 } rocblas_status;
typedef enum rocblas_operation_ { rocblas_operation_none = 111, rocblas_operation_transpose = 112 } rocblas_operation;
typedef enum rocblas_datatype_ { rocblas_datatype_f32_r = 151, rocblas_datatype_bf16_r = 168 } rocblas_datatype;
typedef enum rocblas_gemm_algo_ { rocblas_gemm_algo_standard = 0 } rocblas_gemm_algo;

#ifdef __cplusplus
extern "C" {
#endif
rocblas_status rocblas_create_handle(rocblas_handle* handle);
rocblas_status rocblas_destroy_handle(rocblas_handle handle);
rocblas_status rocblas_set_stream(rocblas_handle handle, hipStream_t stream);
const char* rocblas_status_to_string(rocblas_status status);
rocblas_status rocblas_gemm_strided_batched_ex(
    rocblas_handle handle, rocblas_operation trans_a, rocblas_operation trans_b, rocblas_int m, rocblas_int n,
    rocblas_int k, const void* alpha, const void* a, rocblas_datatype a_type, rocblas_int lda, rocblas_stride stride_a,
    const void* b, rocblas_datatype b_type, rocblas_int ldb, rocblas_stride stride_b, const void* beta, const void* c,
    rocblas_datatype c_type, rocblas_int ldc, rocblas_stride stride_c, void* d, rocblas_datatype d_type,
    rocblas_int ldd, rocblas_stride stride_d, rocblas_int batch_count, rocblas_datatype compute_type,
    rocblas_gemm_algo algo, int32_t solution_index, uint32_t flags);
#ifdef __cplusplus
}
#endif
