#include "train/throughput.h"

#include <array>

namespace kaio::train {
namespace {

struct DevicePeak {
  std::string_view name_part;  // matched against the device name, first hit wins
  double bf16_tflops, fp32_tflops;
};

// Vendor datasheet figures, dense (no structured sparsity); fp32 is the
// non-tensor rate, which is what fp32 operands get without TF32. Sources in
// docs/training.md. The PCIe and NVL cards run at lower clocks than the SXM
// parts, so they come first: the NVL row (no checked figure) says unknown
// rather than claim the SXM peak.
constexpr std::array kPeaks{
    DevicePeak{"NVL", 0, 0},         DevicePeak{"H100 PCIe", 756.0, 51.0}, DevicePeak{"H100", 989.4, 66.9},
    DevicePeak{"H200", 989.4, 66.9}, DevicePeak{"MI300X", 1307.4, 163.4},  DevicePeak{"A100", 312.0, 19.5},
};

}  // namespace

double step_flops(const ModelSpec& spec, const TubeletGrid& grid, int batch) {
  const double rows = static_cast<double>(batch) * grid.tokens(), d = spec.dim, pd = grid.patch_dim();
  const double embed = rows * pd * d, head = rows * d * pd;
  // qkv, proj, fc1 and fc2; then Q K^T and probs V over every (sample, head).
  const double block_linear = rows * d * (3 * d + d + 4 * d + 4 * d);
  const double block_attention = 2.0 * batch * static_cast<double>(grid.tokens()) * grid.tokens() * d;
  const double forward_macs = embed + head + spec.depth * (block_linear + block_attention);
  return 2.0 * (3.0 * forward_macs - embed);
}

double peak_flops(std::string_view device, bool bf16) {
  for (const DevicePeak& peak : kPeaks)
    if (device.find(peak.name_part) != std::string_view::npos)
      return 1e12 * (bf16 ? peak.bf16_tflops : peak.fp32_tflops);
  return 0;
}

}  // namespace kaio::train
