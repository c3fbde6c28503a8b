#pragma once
// Reading dataset archives member by member from a stream, refusing hostile
// content. Formats: tar (plain, gzip, bzip2, xz, zstd) and zip, plus a plain
// media file that is not an archive (detected by its first bytes; it becomes
// one member named after the file).
//
// Limits of streaming: the source is read once, front to back, never seeked.
// Zip is read from its local file headers; the central directory is never
// consulted, so an entry whose local header lies (or a stored entry whose sizes
// appear only in a trailing data descriptor libarchive cannot locate) fails as
// corrupt, and zip64/encrypted entries are read only as far as libarchive's
// streaming zip reader supports them.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/io.h"

namespace kaio::decode {

struct ArchiveLimits {
  std::vector<std::string> member_globs{"*.mp4"};  // fnmatch on the full member path; '*' crosses '/'
  uint64_t max_member_size = 8'000'000'000;
  double max_expand_ratio = 1000;  // bytes out / compressed bytes in
};

ArchiveLimits limits_from_config(const kaio::DecodeConfig& config);

struct Member {
  std::string path;   // the name inside the archive (never used as an on-disk name)
  int64_t size = -1;  // from the header; -1 when the header does not say (streamed zip)
  int index = 0;      // position among the matching members, in archive order
};

// A stable hex name for a member's files: hash of the archive path and member path.
std::string member_id(std::string_view archive_path, std::string_view member_path);

// Whether ArchiveReader's libarchive setup (tar or zip, any compression
// filter) recognises the file's format. Only a format error answers no: a file
// that cannot be opened keeps the reader's own message (kaioctl probe).
bool archive_format_recognised(const std::filesystem::path& file);

class ArchiveReader {
 public:
  ArchiveReader(std::unique_ptr<kaio::ByteSource> source, ArchiveLimits limits);
  ~ArchiveReader();
  ArchiveReader(const ArchiveReader&) = delete;
  ArchiveReader& operator=(const ArchiveReader&) = delete;

  // Moves to the next member matching the globs; false at the end.
  // Throws Error(rejected) naming the archive and member for a hostile member
  // (absolute path, "..", symlink, hard link, device, fifo, over the size
  // limit); calling next() again moves past it. Throws Error(rejected) for a
  // bomb (expansion over the ratio) and Error(corrupt) for a broken stream:
  // after those the reader is broken() and every call rethrows.
  bool next(Member& member);
  // Writes the current member to dest (via dest.tmp, fsync, rename), growing
  // `claim` (may be null) when the member turns out larger than it holds.
  void extract_to(const std::filesystem::path& dest, kaio::SpaceClaim* claim);

  bool broken() const;
  std::string member_path() const;  // the entry last read, a rejected one included
  int skipped() const;              // members not matching the globs
  std::string describe() const;     // the source's name
  uint64_t bytes_in() const;        // compressed bytes read so far
  uint64_t bytes_out() const;       // expanded bytes so far

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kaio::decode
