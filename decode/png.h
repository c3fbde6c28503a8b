#pragma once
// PNG output (libavcodec's png encoder) for kaioctl probe's contact sheets.
#include <cstdint>
#include <filesystem>

namespace kaio::decode {

// `rgb` is width*height*3 bytes, rows packed. Throws Error naming the file.
void write_png(const std::filesystem::path& file, const uint8_t* rgb, int width, int height);

}  // namespace kaio::decode
