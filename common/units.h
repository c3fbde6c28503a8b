#pragma once
// Human units in configs and output: sizes ("10GB", "512MiB", "1.5 GB") and
// durations ("30s", "500ms", "2m", "1h"). KB/MB/GB/TB are powers of 1000,
// KiB/MiB/GiB/TiB powers of 1024; a bare number is bytes or seconds.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kaio {

std::optional<uint64_t> parse_size(std::string_view text);
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

std::string format_size(uint64_t bytes);                   // "1.50 GB"
std::string format_duration(std::chrono::milliseconds d);  // "1h02m", "35s", "120ms"

}  // namespace kaio
