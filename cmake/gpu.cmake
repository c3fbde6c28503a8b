# GPU backends. One kernel source per op (train/gpu/*.cu) is compiled twice:
# by hipcc for AMD and by nvcc for NVIDIA, with train/gpu/vendor.h mapping names.
# CMake 3.25's HIP language does not find Debian's multiarch hip-lang, so the
# kernels are built by a custom command and linked in as objects.

set(KAIO_HIP_ARCH "" CACHE STRING "AMD GPU targets, e.g. gfx942 (MI300X); empty picks what the compiler supports")
set(KAIO_CUDA_ARCH "80;90" CACHE STRING "NVIDIA GPU targets (sm numbers)")

set(KAIO_HIP_ENABLED OFF)
if(NOT KAIO_HIP STREQUAL "OFF")
  find_program(KAIO_HIPCC hipcc)
  find_library(KAIO_AMDHIP64 amdhip64)
  if(KAIO_HIPCC AND KAIO_AMDHIP64)
    set(KAIO_HIP_ENABLED ON)
  elseif(KAIO_HIP STREQUAL "ON")
    message(FATAL_ERROR "KAIO_HIP=ON but hipcc or libamdhip64 was not found")
  endif()
endif()

if(KAIO_HIP_ENABLED AND NOT KAIO_HIP_ARCH)
  # ROCm 6 knows gfx942 (MI300X); Debian's hipcc 5.2 stops at gfx940.
  file(WRITE ${CMAKE_BINARY_DIR}/hip_arch_probe.hip "__global__ void k(){}\n")
  execute_process(COMMAND ${KAIO_HIPCC} --offload-arch=gfx942 -c -x hip
                          ${CMAKE_BINARY_DIR}/hip_arch_probe.hip -o ${CMAKE_BINARY_DIR}/hip_arch_probe.o
                  RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_QUIET)
  if(probe_rc EQUAL 0)
    set(KAIO_HIP_ARCH "gfx90a;gfx942")
  else()
    set(KAIO_HIP_ARCH "gfx90a;gfx940")
  endif()
endif()

set(KAIO_CUDA_ENABLED OFF)
if(NOT KAIO_CUDA STREQUAL "OFF")
  find_program(KAIO_NVCC nvcc HINTS /usr/local/cuda/bin)
  if(KAIO_NVCC)
    get_filename_component(_cuda_bin ${KAIO_NVCC} DIRECTORY)
    get_filename_component(KAIO_CUDA_ROOT ${_cuda_bin} DIRECTORY)
    find_library(KAIO_CUDART_STATIC cudart_static HINTS ${KAIO_CUDA_ROOT}/lib64 ${KAIO_CUDA_ROOT}/lib)
  endif()
  if(KAIO_NVCC AND KAIO_CUDART_STATIC)
    set(KAIO_CUDA_ENABLED ON)
  elseif(KAIO_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KAIO_CUDA=ON but nvcc or cudart_static was not found")
  endif()
endif()

# cuBLAS for the matrix products (train/gpu/gemm.cu) where the toolkit has
# it; without it the CUDA backend keeps its own tiled kernel.
set(KAIO_CUDA_BLAS OFF)
set(KAIO_CUDA_BLAS_FLAGS)
if(KAIO_CUDA_ENABLED)
  set(CUDAToolkit_ROOT ${KAIO_CUDA_ROOT})
  find_package(CUDAToolkit QUIET)
  if(TARGET CUDA::cublas)
    set(KAIO_CUDA_BLAS ON)
    set(KAIO_CUDA_BLAS_FLAGS -DKAIO_HAVE_CUBLAS)
  endif()
endif()

# rocBLAS for the HIP matrix products where ROCm ships it (ROCm 5.2+ puts the
# header under rocblas/); Debian's hipcc 5.2 has none, and the HIP backend
# then keeps its own tiled kernel.
set(KAIO_HIP_BLAS OFF)
set(KAIO_HIP_BLAS_FLAGS)
if(KAIO_HIP_ENABLED)
  find_path(KAIO_ROCBLAS_INCLUDE rocblas/rocblas.h HINTS /opt/rocm/include)
  find_library(KAIO_ROCBLAS rocblas HINTS /opt/rocm/lib)
  if(KAIO_ROCBLAS_INCLUDE AND KAIO_ROCBLAS)
    set(KAIO_HIP_BLAS ON)
    set(KAIO_HIP_BLAS_FLAGS -DKAIO_HAVE_ROCBLAS -I${KAIO_ROCBLAS_INCLUDE})
  endif()
endif()

message(STATUS "kaio: HIP backend ${KAIO_HIP_ENABLED} (${KAIO_HIP_ARCH}, rocBLAS ${KAIO_HIP_BLAS}), CUDA backend ${KAIO_CUDA_ENABLED} (${KAIO_CUDA_ARCH}, cuBLAS ${KAIO_CUDA_BLAS})")

# kaio_gpu_objects(<out-var> <hip|cuda> <include-dir> <sources...>): compiles the
# sources for one vendor and returns the object files in <out-var>.
function(kaio_gpu_objects out vendor incdir)
  set(objs)
  foreach(src ${ARGN})
    get_filename_component(name ${src} NAME_WE)
    set(obj ${CMAKE_CURRENT_BINARY_DIR}/${vendor}/${name}.o)
    get_filename_component(abs ${src} ABSOLUTE)
    # CONFIGURE_DEPENDS: a header added later re-runs the glob at build time.
    file(GLOB gpu_headers CONFIGURE_DEPENDS ${incdir}/*.h)
    if(vendor STREQUAL "hip")
      set(arch_flags)
      foreach(a ${KAIO_HIP_ARCH})
        list(APPEND arch_flags --offload-arch=${a})
      endforeach()
      add_custom_command(OUTPUT ${obj}
        COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/${vendor}
        COMMAND ${KAIO_HIPCC} -std=c++17 -O3 -fPIC -DKAIO_VENDOR_HIP ${KAIO_HIP_BLAS_FLAGS} ${arch_flags}
                -I${incdir} -c -x hip ${abs} -o ${obj}
        DEPENDS ${abs} ${gpu_headers}
        COMMENT "hipcc ${name}.cu" VERBATIM)
    else()
      set(arch_flags)
      foreach(a ${KAIO_CUDA_ARCH})
        list(APPEND arch_flags -gencode=arch=compute_${a},code=sm_${a})
      endforeach()
      add_custom_command(OUTPUT ${obj}
        COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/${vendor}
        COMMAND ${KAIO_NVCC} -std=c++17 -O3 -Xcompiler=-fPIC -DKAIO_VENDOR_CUDA ${KAIO_CUDA_BLAS_FLAGS} ${arch_flags}
                -I${incdir} -c -x cu ${abs} -o ${obj}
        DEPENDS ${abs} ${gpu_headers}
        COMMENT "nvcc ${name}.cu" VERBATIM)
    endif()
    list(APPEND objs ${obj})
  endforeach()
  set(${out} ${objs} PARENT_SCOPE)
endfunction()
