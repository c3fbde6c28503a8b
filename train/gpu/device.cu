// Device discovery, streams, memory, and the vendor's op table; plus a smoke
// kernel so the build proves each vendor's toolchain works.
#include <string>

#include "kernels.h"

namespace kaio_gpu {
namespace {

std::string g_last_error;
std::string g_device_name;
gpuStream_t g_compute = nullptr, g_copy = nullptr;
float* g_scratch = nullptr;
size_t g_scratch_count = 0;

__global__ void axpy_kernel(int n, float a, const float* x, float* y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += a * x[i];
}

}  // namespace

gpuStream_t compute_stream() {
  return g_compute;
}
gpuStream_t copy_stream() {
  return g_copy;
}

int check(gpuError_t err, const char* what) {
  if (err == gpuSuccess) return 0;
  g_last_error = std::string(what) + ": " + gpuGetErrorString(err);
  return -1;
}

int check_launch(const char* what) {
  return check(gpuGetLastError(), what);
}

int fail(const char* what, const char* detail) {
  g_last_error = std::string(what) + ": " + detail;
  return -1;
}

float* scratch(size_t count) {
  if (count <= g_scratch_count) return g_scratch;
  if (g_scratch) (void)gpuFree(g_scratch);
  g_scratch = nullptr;
  g_scratch_count = 0;
  if (check(gpuMalloc(&g_scratch, count * sizeof(float)), "scratch allocation")) return nullptr;
  g_scratch_count = count;
  return g_scratch;
}

}  // namespace kaio_gpu

using namespace kaio_gpu;

namespace {

const char* last_error() {
  return g_last_error.c_str();
}

int init() {
  if (g_compute) return 0;
  if (check(gpuSetDevice(0), "set device 0") || check(gpuStreamCreate(&g_compute), "create compute stream") ||
      check(gpuStreamCreate(&g_copy), "create copy stream"))
    return -1;
  gpuDeviceProp prop{};
  if (check(gpuGetDeviceProperties(&prop, 0), "device properties")) return -1;
  g_device_name = prop.name;
  return gemm_init();
}

const char* device_name() {
  return g_device_name.c_str();
}

void* malloc_device(size_t bytes) {
  void* ptr = nullptr;
  return check(gpuMalloc(&ptr, bytes), "device allocation") ? nullptr : ptr;
}
void free_device(void* ptr) {
  (void)gpuFree(ptr);
}
void* malloc_pinned(size_t bytes) {
  void* ptr = nullptr;
  return check(gpuMallocHost(&ptr, bytes), "pinned allocation") ? nullptr : ptr;
}
void free_pinned(void* ptr) {
  (void)gpuFreeHost(ptr);
}

// Host-side copies order themselves after queued compute work.
int to_device(void* dst, const void* src, size_t bytes) {
  if (check(gpuMemcpyAsync(dst, src, bytes, gpuMemcpyHostToDevice, g_compute), "copy to device")) return -1;
  return check(gpuStreamSynchronize(g_compute), "copy to device");
}
int to_host(void* dst, const void* src, size_t bytes) {
  if (check(gpuMemcpyAsync(dst, src, bytes, gpuMemcpyDeviceToHost, g_compute), "copy to host")) return -1;
  return check(gpuStreamSynchronize(g_compute), "copy to host");
}
int zero(void* dst, size_t bytes) {
  return check(gpuMemsetAsync(dst, 0, bytes, g_compute), "memset");
}

int upload_pinned(void* dst, const void* pinned_src, size_t bytes) {
  return check(gpuMemcpyAsync(dst, pinned_src, bytes, gpuMemcpyHostToDevice, g_copy), "batch upload");
}

int synchronize() {
  return check(gpuStreamSynchronize(g_compute), "synchronize");
}

gpuEvent_t as_event(void* event) {
  return static_cast<gpuEvent_t>(event);
}
void* event_create() {
  gpuEvent_t event = nullptr;
  return check(gpuEventCreate(&event), "create event") ? nullptr : event;
}
void event_destroy(void* event) {
  (void)gpuEventDestroy(as_event(event));
}
int event_record(void* event, int on_copy_stream) {
  return check(gpuEventRecord(as_event(event), on_copy_stream ? g_copy : g_compute), "record event");
}
int event_synchronize(void* event) {
  return check(gpuEventSynchronize(as_event(event)), "wait for event");
}
int event_elapsed_ms(float* ms, void* start, void* end) {
  return check(gpuEventElapsedTime(ms, as_event(start), as_event(end)), "event elapsed time");
}
int compute_wait(void* event) {
  return check(gpuStreamWaitEvent(g_compute, as_event(event), 0), "compute stream waits for event");
}

const KaioGpuOps kOps = {last_error,
                         init,
                         device_name,
                         gemm_engine,
                         malloc_device,
                         free_device,
                         malloc_pinned,
                         free_pinned,
                         to_device,
                         to_host,
                         zero,
                         upload_pinned,
                         synchronize,
                         KAIO_GPU_FN(patchify),
                         KAIO_GPU_FN(embed_combine_forward),
                         KAIO_GPU_FN(embed_combine_backward),
                         KAIO_GPU_FN(linear_forward),
                         KAIO_GPU_FN(linear_backward),
                         KAIO_GPU_FN(layernorm_forward),
                         KAIO_GPU_FN(layernorm_backward),
                         KAIO_GPU_FN(attention_forward),
                         KAIO_GPU_FN(attention_backward),
                         KAIO_GPU_FN(attention_fused_supports),
                         KAIO_GPU_FN(attention_forward_fused),
                         KAIO_GPU_FN(attention_backward_fused),
                         KAIO_GPU_FN(gelu_forward),
                         KAIO_GPU_FN(gelu_backward),
                         KAIO_GPU_FN(add),
                         KAIO_GPU_FN(masked_mse),
                         KAIO_GPU_FN(sum_squares),
                         KAIO_GPU_FN(adamw),
                         event_create,
                         event_destroy,
                         event_record,
                         event_synchronize,
                         event_elapsed_ms,
                         compute_wait,
                         KAIO_GPU_FN(masked_mse_figures),
                         KAIO_GPU_FN(grad_figures),
                         KAIO_GPU_FN(adamw_figures)};

}  // namespace

extern "C" const KaioGpuOps* KAIO_GPU_FN(ops)() {
  return &kOps;
}

extern "C" int KAIO_GPU_FN(device_count)() {
  int n = 0;
  if (gpuGetDeviceCount(&n) != gpuSuccess) return 0;
  return n;
}

extern "C" int KAIO_GPU_FN(axpy_host)(int n, float a, const float* x, float* y) {
  float *dx = nullptr, *dy = nullptr;
  size_t bytes = static_cast<size_t>(n) * sizeof(float);
  if (gpuMalloc(&dx, bytes) != gpuSuccess) return -1;
  if (gpuMalloc(&dy, bytes) != gpuSuccess) {
    (void)gpuFree(dx);
    return -1;
  }
  (void)gpuMemcpy(dx, x, bytes, gpuMemcpyHostToDevice);
  (void)gpuMemcpy(dy, y, bytes, gpuMemcpyHostToDevice);
  axpy_kernel<<<(n + 255) / 256, 256>>>(n, a, dx, dy);
  gpuError_t err = gpuMemcpy(y, dy, bytes, gpuMemcpyDeviceToHost);
  (void)gpuFree(dx);
  (void)gpuFree(dy);
  return err == gpuSuccess ? 0 : -1;
}
