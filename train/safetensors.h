#pragma once
// Minimal safetensors: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}}, then raw little-endian data.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace kaio::train {

struct Tensor {
  std::string dtype;  // "F32", "F64", "U8"
  std::vector<int64_t> shape;
  std::string bytes;
};
using TensorMap = std::map<std::string, Tensor>;

std::string encode_safetensors(const TensorMap& tensors, const std::map<std::string, std::string>& metadata);
// Throws kaio::Error(corrupt) naming the file and tensor on malformed input.
TensorMap read_safetensors(const std::filesystem::path& path, std::map<std::string, std::string>* metadata = nullptr);

Tensor f32_tensor(const float* data, std::vector<int64_t> shape);
std::vector<float> as_f32(const Tensor& t, const std::string& what);

}  // namespace kaio::train
