#pragma once
// The activations' element type on the device: fp32, or bf16 under
// train.bf16. Bf16 is kept as its 16 bits (the upper half of the fp32
// pattern), the layout cuBLAS's CUDA_R_16BF and rocBLAS's bf16_r read, so the
// kernels need no vendor type and the host tests (tests/train/host_shim.h)
// can run them. Kernels load every element to float, compute in float, and
// store through from_float.
namespace kaio_gpu {

struct Bf16 {
  unsigned short bits;
};

__device__ inline float to_float(float x) {
  return x;
}
__device__ inline float to_float(Bf16 x) {
  return __uint_as_float(static_cast<unsigned>(x.bits) << 16);
}

// Nearest bf16, ties to even; a NaN stays a NaN (rounding its low bits away
// could make it an infinity).
__device__ inline Bf16 bf16_of(float x) {
  const unsigned u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<unsigned short>((u >> 16) | 0x40u)};
  return {static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

template <typename T>
__device__ inline T from_float(float x);
template <>
__device__ inline float from_float<float>(float x) {
  return x;
}
template <>
__device__ inline Bf16 from_float<Bf16>(float x) {
  return bf16_of(x);
}

// x rounded to the nearest bf16 and kept in a float: a bf16 operand of an
// fp32-accumulated product.
__device__ inline float round_bf16(float x) {
  return to_float(bf16_of(x));
}

template <typename T>
inline constexpr bool is_bf16 = false;
template <>
inline constexpr bool is_bf16<Bf16> = true;

}  // namespace kaio_gpu
