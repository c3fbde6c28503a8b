#include "common/mapped_file.h"

#include <sys/mman.h>

#include "common/error.h"

namespace kaio {

MappedFile::MappedFile(int fd, size_t length, std::string_view what, std::string_view name) {
  void* m = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) throw_errno(what, name);
  addr_ = m;
  length_ = length;
}

MappedFile::~MappedFile() {
  if (addr_) ::munmap(addr_, length_);
}

}  // namespace kaio
