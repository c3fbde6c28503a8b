#include "tools/kaio-hub/repo_index.h"

#include <algorithm>

#include "fetch/hash.h"

namespace kaio::hub {
namespace fs = std::filesystem;
using fetch::Digest;
using fetch::HashKind;

const HubFile* HubRepo::find(const std::string& path) const {
  auto it = std::lower_bound(files.begin(), files.end(), path,
                             [](const HubFile& f, const std::string& p) { return f.path < p; });
  return it != files.end() && it->path == path ? &*it : nullptr;
}

bool HubRepo::is_directory(const std::string& path) const {
  std::string prefix = path + "/";
  return std::any_of(files.begin(), files.end(), [&](const HubFile& f) { return f.path.starts_with(prefix); });
}

namespace {

std::string lfs_pointer(const HubFile& f) {
  return "version https://git-lfs.github.com/spec/v1\noid sha256:" + f.sha256 + "\nsize " + std::to_string(f.size) +
         "\n";
}

HubFile index_file(const fs::path& repo_dir, const fs::path& disk, uint64_t lfs_threshold) {
  HubFile f;
  f.disk = disk;
  f.path = fs::relative(disk, repo_dir).generic_string();
  f.size = fs::file_size(disk);
  f.sha256 = fetch::hash_file(disk, HashKind::sha256, false);
  f.lfs = f.size >= lfs_threshold;
  if (f.lfs) {
    std::string pointer = lfs_pointer(f);
    f.pointer_size = pointer.size();
    Digest d(HashKind::sha1);
    d.update(fetch::git_blob_header(pointer.size()));
    d.update(pointer);
    f.git_oid = d.hex();
  } else {
    f.git_oid = fetch::hash_file(disk, HashKind::sha1, true);
  }
  return f;
}

HubRepo index_repo(const std::string& id, const fs::path& dir, uint64_t lfs_threshold) {
  HubRepo repo;
  repo.id = id;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) repo.files.push_back(index_file(dir, entry.path(), lfs_threshold));
  }
  std::sort(repo.files.begin(), repo.files.end(), [](const HubFile& a, const HubFile& b) { return a.path < b.path; });
  Digest commit(HashKind::sha1);
  for (const auto& f : repo.files) commit.update(f.path + '\0' + std::to_string(f.size) + '\0' + f.sha256 + '\n');
  repo.sha = commit.hex();
  return repo;
}

}  // namespace

std::map<std::string, HubRepo> index_repos(const fs::path& root, uint64_t lfs_threshold) {
  std::map<std::string, HubRepo> repos;
  for (const auto& org : fs::directory_iterator(root)) {
    if (!org.is_directory()) continue;
    for (const auto& name : fs::directory_iterator(org.path())) {
      if (!name.is_directory()) continue;
      std::string id = org.path().filename().string() + "/" + name.path().filename().string();
      repos.emplace(id, index_repo(id, name.path(), lfs_threshold));
    }
  }
  return repos;
}

}  // namespace kaio::hub
