#include "common/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <system_error>

#include "common/error.h"
#include "common/fd.h"

namespace kaio {

void fsync_path(const std::filesystem::path& path) {
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.get() < 0) throw_errno("open for fsync", path.string());
  if (::fsync(f.get()) != 0) throw_errno("fsync", path.string());
}

void write_file_durably(const std::filesystem::path& path, std::string_view data) {
  auto tmp = path;
  tmp += ".tmp";
  {
    Fd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (f.get() < 0) throw_errno("create", tmp.string());
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::write(f.get(), data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_errno("write", tmp.string());
      }
      done += static_cast<size_t>(n);
    }
    if (::fsync(f.get()) != 0) throw_errno("fsync", tmp.string());
  }
  rename_durably(tmp, path);
}

void rename_durably(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) throw_errno("rename to " + to.string() + " from", from.string());
  auto dir = to.parent_path();
  fsync_path(dir.empty() ? std::filesystem::path(".") : dir);
}

uint64_t disk_usage(const std::filesystem::path& dir) {
  uint64_t total = 0;
  std::error_code ec;
  struct stat st {};
  if (::lstat(dir.c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_blocks) * 512;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, std::filesystem::directory_options::skip_permission_denied, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (::lstat(it->path().c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

}  // namespace kaio
