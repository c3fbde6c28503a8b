#pragma once
// A ByteSource over a finished local file (tests, kaioctl probe, replays).
#include <filesystem>
#include <memory>

#include "common/fd.h"
#include "common/io.h"

namespace kaio::decode {

class FileSource : public kaio::ByteSource {
 public:
  explicit FileSource(std::filesystem::path path);  // throws Error(io) naming the file
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  size_t read(std::span<std::byte> out) override;
  std::string describe() const override { return path_.string(); }

 private:
  std::filesystem::path path_;
  Fd fd_;
};

}  // namespace kaio::decode
