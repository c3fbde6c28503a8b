#pragma once
// One kernel source for two vendors: this header maps the runtime names, the
// way ggml's vendors/hip.h and vendors/cuda.h do. Kernels include only this.
#if defined(KAIO_VENDOR_HIP)
#include <hip/hip_runtime.h>
#define gpuError_t hipError_t
#define gpuSuccess hipSuccess
#define gpuGetErrorString hipGetErrorString
#define gpuGetDeviceCount hipGetDeviceCount
#define gpuGetDeviceProperties hipGetDeviceProperties
#define gpuDeviceProp hipDeviceProp_t
#define gpuSetDevice hipSetDevice
#define gpuGetDevice hipGetDevice
#define gpuMalloc hipMalloc
#define gpuFree hipFree
#define gpuMallocHost hipHostMalloc
#define gpuFreeHost hipHostFree
#define gpuMemcpy hipMemcpy
#define gpuMemcpyAsync hipMemcpyAsync
#define gpuMemset hipMemset
#define gpuMemsetAsync hipMemsetAsync
#define gpuMemcpyHostToDevice hipMemcpyHostToDevice
#define gpuMemcpyDeviceToHost hipMemcpyDeviceToHost
#define gpuMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define gpuStream_t hipStream_t
#define gpuStreamCreate hipStreamCreate
#define gpuStreamDestroy hipStreamDestroy
#define gpuStreamSynchronize hipStreamSynchronize
#define gpuStreamWaitEvent hipStreamWaitEvent
#define gpuEvent_t hipEvent_t
#define gpuEventCreate hipEventCreate
#define gpuEventDestroy hipEventDestroy
#define gpuEventRecord hipEventRecord
#define gpuEventSynchronize hipEventSynchronize
#define gpuEventElapsedTime hipEventElapsedTime
#define gpuDeviceSynchronize hipDeviceSynchronize
#define gpuGetLastError hipGetLastError
#define gpuShflDown(v, offset) __shfl_down(v, offset)
#define KAIO_VENDOR_NAME "hip"
// rocBLAS for the matrix products (gemm.cu), where CMake found it. Its
// strided-batched product writes a separate D; kaio passes C for both, so it
// takes cuBLAS's argument list.
#if defined(KAIO_HAVE_ROCBLAS)
#include <rocblas/rocblas.h>
#define KAIO_VENDOR_BLAS 1
#define KAIO_VENDOR_BLAS_NAME "rocBLAS"
#define gpublasHandle_t rocblas_handle
#define gpublasStatus_t rocblas_status
#define GPUBLAS_STATUS_SUCCESS rocblas_status_success
#define gpublasCreate rocblas_create_handle
#define gpublasDestroy rocblas_destroy_handle
#define gpublasSetStream rocblas_set_stream
#define gpublasGetStatusString rocblas_status_to_string
#define gpublasOperation_t rocblas_operation
#define GPUBLAS_OP_N rocblas_operation_none
#define GPUBLAS_OP_T rocblas_operation_transpose
#define GPUBLAS_R_32F rocblas_datatype_f32_r
#define GPUBLAS_R_16BF rocblas_datatype_bf16_r
#define GPUBLAS_COMPUTE_32F rocblas_datatype_f32_r
#define GPUBLAS_GEMM_DEFAULT rocblas_gemm_algo_standard
inline rocblas_status gpublasGemmStridedBatchedEx(rocblas_handle handle, rocblas_operation trans_a,
                                                  rocblas_operation trans_b, int m, int n, int k, const float* alpha,
                                                  const void* a, rocblas_datatype a_type, int lda, long stride_a,
                                                  const void* b, rocblas_datatype b_type, int ldb, long stride_b,
                                                  const float* beta, void* c, rocblas_datatype c_type, int ldc,
                                                  long stride_c, int count, rocblas_datatype compute_type,
                                                  rocblas_gemm_algo algo) {
  return rocblas_gemm_strided_batched_ex(handle, trans_a, trans_b, m, n, k, alpha, a, a_type, lda, stride_a, b, b_type,
                                         ldb, stride_b, beta, c, c_type, ldc, stride_c, c, c_type, ldc, stride_c, count,
                                         compute_type, algo, 0, 0);
}
#endif
#elif defined(KAIO_VENDOR_CUDA)
#include <cuda_runtime.h>
#define gpuError_t cudaError_t
#define gpuSuccess cudaSuccess
#define gpuGetErrorString cudaGetErrorString
#define gpuGetDeviceCount cudaGetDeviceCount
#define gpuGetDeviceProperties cudaGetDeviceProperties
#define gpuDeviceProp cudaDeviceProp
#define gpuSetDevice cudaSetDevice
#define gpuGetDevice cudaGetDevice
#define gpuMalloc cudaMalloc
#define gpuFree cudaFree
#define gpuMallocHost cudaMallocHost
#define gpuFreeHost cudaFreeHost
#define gpuMemcpy cudaMemcpy
#define gpuMemcpyAsync cudaMemcpyAsync
#define gpuMemset cudaMemset
#define gpuMemsetAsync cudaMemsetAsync
#define gpuMemcpyHostToDevice cudaMemcpyHostToDevice
#define gpuMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define gpuMemcpyDeviceToDevice cudaMemcpyDeviceToDevice
#define gpuStream_t cudaStream_t
#define gpuStreamCreate cudaStreamCreate
#define gpuStreamDestroy cudaStreamDestroy
#define gpuStreamSynchronize cudaStreamSynchronize
#define gpuStreamWaitEvent cudaStreamWaitEvent
#define gpuEvent_t cudaEvent_t
#define gpuEventCreate cudaEventCreate
#define gpuEventDestroy cudaEventDestroy
#define gpuEventRecord cudaEventRecord
#define gpuEventSynchronize cudaEventSynchronize
#define gpuEventElapsedTime cudaEventElapsedTime
#define gpuDeviceSynchronize cudaDeviceSynchronize
#define gpuGetLastError cudaGetLastError
#define gpuShflDown(v, offset) __shfl_down_sync(0xffffffffu, v, offset)
#define KAIO_VENDOR_NAME "cuda"
// The vendor BLAS for the matrix products (gemm.cu), where CMake found it.
#if defined(KAIO_HAVE_CUBLAS)
#include <cublas_v2.h>
#define KAIO_VENDOR_BLAS 1
#define KAIO_VENDOR_BLAS_NAME "cuBLAS"
#define gpublasHandle_t cublasHandle_t
#define gpublasStatus_t cublasStatus_t
#define GPUBLAS_STATUS_SUCCESS CUBLAS_STATUS_SUCCESS
#define gpublasCreate cublasCreate
#define gpublasDestroy cublasDestroy
#define gpublasSetStream cublasSetStream
#define gpublasGetStatusString cublasGetStatusString
#define gpublasGemmStridedBatchedEx cublasGemmStridedBatchedEx
#define gpublasOperation_t cublasOperation_t
#define GPUBLAS_OP_N CUBLAS_OP_N
#define GPUBLAS_OP_T CUBLAS_OP_T
#define GPUBLAS_R_32F CUDA_R_32F
#define GPUBLAS_R_16BF CUDA_R_16BF
#define GPUBLAS_COMPUTE_32F CUBLAS_COMPUTE_32F
#define GPUBLAS_GEMM_DEFAULT CUBLAS_GEMM_DEFAULT
#endif
#else
#error "define KAIO_VENDOR_HIP or KAIO_VENDOR_CUDA"
#endif

// Wavefront/warp width: 64 on CDNA (gfx90a, gfx942), 32 on NVIDIA and RDNA.
// Kernels size their reductions with warpSize at run time, never a literal 32.
