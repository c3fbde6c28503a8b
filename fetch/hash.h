#pragma once
// Content hashes the Hub publishes: sha256 for LFS files, git blob sha1
// ("blob <size>\0" + content) for the others. Hex digests, lowercase.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace kaio::fetch {

enum class HashKind { sha1, sha256 };

class Digest {
 public:
  explicit Digest(HashKind kind);
  ~Digest();
  Digest(Digest&&) noexcept;
  Digest& operator=(Digest&&) noexcept;
  void update(const void* data, size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  std::string hex();  // finishes the digest; the object is reset afterwards

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  HashKind kind_;
};

// A git blob hash starts with this header before the content.
std::string git_blob_header(uint64_t size);
// Hashes a whole file, as a git blob when `git_blob`.
std::string hash_file(const std::filesystem::path& file, HashKind kind, bool git_blob);

}  // namespace kaio::fetch
