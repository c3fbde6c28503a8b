#pragma once
// For the host kernel tests: seeded inputs, host values as the kernels'
// element types (train/gpu/element.h) and back, and the error measure. After
// tests/train/host_shim.h, which element.h's device code needs.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "train/gpu/element.h"

namespace host_elements {

inline std::vector<float> random_values(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Values as elements of type T (a NaN stays a NaN), and back.
template <typename T>
std::vector<T> stored(const std::vector<float>& values) {
  std::vector<T> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = kaio_gpu::from_float<T>(values[i]);
  return out;
}
template <typename T>
std::vector<float> loaded(const std::vector<T>& elements) {
  std::vector<float> out(elements.size());
  for (size_t i = 0; i < elements.size(); ++i) out[i] = kaio_gpu::to_float(elements[i]);
  return out;
}

// Max abs error over the largest reference value; an element left NaN (never
// written) counts as infinite.
template <typename Want>
double relative_error(const std::vector<float>& got, const std::vector<Want>& want) {
  double max_abs = 0, max_ref = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    max_abs = std::max(max_abs, std::isnan(got[i]) ? INFINITY : std::abs(double(got[i]) - double(want[i])));
    max_ref = std::max(max_ref, std::abs(double(want[i])));
  }
  return max_abs / std::max(max_ref, 1e-12);
}

}  // namespace host_elements
