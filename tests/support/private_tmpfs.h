#pragma once
// Test helper: a filesystem the test owns and can fill, so that writes fail
// with a real ENOSPC. Call in a forked child: it enters a private mount
// namespace (a user namespace too when not root) and mounts a tmpfs of `size`
// ("48m") at `dir`. False when the machine allows neither.
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace kaio::test {

inline bool mount_private_tmpfs(const std::filesystem::path& dir, const char* size) {
  uid_t uid = ::geteuid();
  gid_t gid = ::getegid();
  if (::unshare(CLONE_NEWNS) != 0) {
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return false;
    std::ofstream("/proc/self/setgroups") << "deny";
    std::ofstream("/proc/self/uid_map") << "0 " << uid << " 1";
    std::ofstream("/proc/self/gid_map") << "0 " << gid << " 1";
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  return ::mount("tmpfs", dir.c_str(), "tmpfs", 0, (std::string("size=") + size).c_str()) == 0;
}

}  // namespace kaio::test
