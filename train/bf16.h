#pragma once
// bf16 on the host: the upper half of an fp32's bits, rounded to nearest even
// as train/gpu/element.h does on the device; a NaN stays a NaN.
#include <cstdint>
#include <cstring>

namespace kaio::train {

inline uint16_t bf16_bits(float x) {
  uint32_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffU) > 0x7f800000U) return static_cast<uint16_t>((u >> 16) | 0x40U);
  return static_cast<uint16_t>((u + 0x7fffU + ((u >> 16) & 1U)) >> 16);
}

inline float bf16_value(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float x = 0;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

}  // namespace kaio::train
