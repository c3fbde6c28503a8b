#include "train/safetensors.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "common/error.h"

namespace kaio::train {
namespace {

size_t dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "U8") return 1;
  return 0;
}

}  // namespace

std::string encode_safetensors(const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  std::string out(8, '\0');
  const uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  out += text;
  for (const auto& [name, t] : tensors) out += t.bytes;
  return out;
}

TensorMap read_safetensors(const std::filesystem::path& path, std::map<std::string, std::string>* metadata) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::io, "cannot open " + path.string());
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.size() < 8) throw Error(ErrorKind::corrupt, path.string() + ": too short for a safetensors header");
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(static_cast<unsigned char>(data[i])) << (8 * i);
  if (len > data.size() - 8) throw Error(ErrorKind::corrupt, path.string() + ": header length past the end of file");
  const nlohmann::json header = nlohmann::json::parse(data.substr(8, len), nullptr, false);
  if (!header.is_object()) throw Error(ErrorKind::corrupt, path.string() + ": header is not a JSON object");
  const size_t base = 8 + len;
  TensorMap out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (metadata) *metadata = entry.get<std::map<std::string, std::string>>();
      continue;
    }
    Tensor t;
    t.dtype = entry.value("dtype", "");
    t.shape = entry.value("shape", std::vector<int64_t>{});
    const auto offsets = entry.value("data_offsets", std::vector<uint64_t>{});
    const size_t count = std::accumulate(t.shape.begin(), t.shape.end(), size_t{1},
                                         [](size_t a, int64_t b) { return a * static_cast<size_t>(b); });
    if (offsets.size() != 2 || offsets[1] < offsets[0] || base + offsets[1] > data.size() || dtype_size(t.dtype) == 0 ||
        offsets[1] - offsets[0] != count * dtype_size(t.dtype))
      throw Error(ErrorKind::corrupt, path.string() + ": tensor '" + name + "' has a bad dtype, shape or offsets");
    t.bytes = data.substr(base + offsets[0], offsets[1] - offsets[0]);
    out.emplace(name, std::move(t));
  }
  return out;
}

Tensor f32_tensor(const float* data, std::vector<int64_t> shape) {
  const size_t count = std::accumulate(shape.begin(), shape.end(), size_t{1},
                                       [](size_t a, int64_t b) { return a * static_cast<size_t>(b); });
  return {"F32", std::move(shape), std::string(reinterpret_cast<const char*>(data), count * sizeof(float))};
}

std::vector<float> as_f32(const Tensor& t, const std::string& what) {
  if (t.dtype != "F32") throw Error(ErrorKind::corrupt, what + ": expected F32, got " + t.dtype);
  std::vector<float> out(t.bytes.size() / sizeof(float));
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  return out;
}

}  // namespace kaio::train
