#include "decode/file_source.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "common/error.h"

namespace kaio::decode {

FileSource::FileSource(std::filesystem::path path)
    : path_(std::move(path)), fd_(::open(path_.c_str(), O_RDONLY | O_CLOEXEC)) {
  if (fd_.get() < 0) throw_errno("open", path_.string());
}

size_t FileSource::read(std::span<std::byte> out) {
  while (true) {
    ssize_t n = ::read(fd_.get(), out.data(), out.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) throw_errno("read", path_.string());
  }
}

}  // namespace kaio::decode
