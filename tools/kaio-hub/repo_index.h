#pragma once
// The repos kaio-hub serves: each folder root/<org>/<name> is a dataset repo,
// hashed once at start so sizes, oids and the commit sha are stable.
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kaio::hub {

struct HubFile {
  std::string path;            // repo-relative, '/' separated
  std::filesystem::path disk;  // where it lives
  uint64_t size = 0;
  std::string sha256;
  std::string git_oid;  // blob sha1 of the content, or of the LFS pointer
  bool lfs = false;
  uint64_t pointer_size = 0;
};

struct HubRepo {
  std::string id;              // org/name
  std::string sha;             // commit: hash of the file list and contents
  std::vector<HubFile> files;  // sorted by path
  const HubFile* find(const std::string& path) const;
  bool is_directory(const std::string& path) const;
};

// Scans root; files of lfs_threshold bytes or more count as LFS files.
std::map<std::string, HubRepo> index_repos(const std::filesystem::path& root, uint64_t lfs_threshold);

}  // namespace kaio::hub
