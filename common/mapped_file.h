#pragma once
// Owns a memory mapping of a file: unmapped once, when the owner goes away.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

namespace kaio {

class MappedFile {
 public:
  MappedFile() = default;
  // Maps the first `length` bytes of the open file `fd` read-only and shared.
  // The descriptor may be closed afterwards; the mapping stays. Throws
  // Error(io) like throw_errno(what, name) when mmap fails.
  MappedFile(int fd, size_t length, std::string_view what, std::string_view name);
  MappedFile(MappedFile&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), length_(std::exchange(o.length_, 0)) {}
  MappedFile& operator=(MappedFile&& o) noexcept {
    std::swap(addr_, o.addr_);
    std::swap(length_, o.length_);
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return static_cast<const uint8_t*>(addr_); }
  size_t size() const { return length_; }

 private:
  void* addr_ = nullptr;
  size_t length_ = 0;
};

}  // namespace kaio
