#include "common/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string_view>
#include <system_error>
#include <utility>

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

namespace {

// Sums the blocks of the folder open as `dir_fd` and everything below it. An
// entry removed while the walk runs counts as gone and the walk goes on (a
// directory iterator stops at the first such error and undercounts the rest).
uint64_t folder_usage(Fd dir_fd) {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(dir_fd.get()), &::closedir);
  if (!dir) return 0;
  dir_fd.release();  // the DIR owns it now
  uint64_t total = 0;
  while (const dirent* e = ::readdir(dir.get())) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(::dirfd(dir.get()), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    total += static_cast<uint64_t>(st.st_blocks) * 512;
    if (!S_ISDIR(st.st_mode)) continue;
    Fd child(::openat(::dirfd(dir.get()), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (child.get() >= 0) total += folder_usage(std::move(child));
  }
  return total;
}

}  // namespace

uint64_t disk_usage(const std::filesystem::path& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return 0;
  uint64_t total = static_cast<uint64_t>(st.st_blocks) * 512;
  if (!S_ISDIR(st.st_mode)) return total;
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  return fd.get() < 0 ? total : total + folder_usage(std::move(fd));
}

}  // namespace kaio
