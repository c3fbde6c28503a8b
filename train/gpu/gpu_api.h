#pragma once
// The C entry points of the kernel library, one set per vendor
// (kaio_hip_* and kaio_cuda_*), callable from plain C++ without GPU headers.
#if defined(KAIO_VENDOR_HIP)
#define KAIO_GPU_FN(name) kaio_hip_##name
#elif defined(KAIO_VENDOR_CUDA)
#define KAIO_GPU_FN(name) kaio_cuda_##name
#endif

#ifdef __cplusplus
extern "C" {
#endif
int kaio_hip_device_count(void);
int kaio_hip_axpy_host(int n, float a, const float* x, float* y);
int kaio_cuda_device_count(void);
int kaio_cuda_axpy_host(int n, float a, const float* x, float* y);
#ifdef __cplusplus
}
#endif
