// The member-name sanitiser. Tar checksums make it hard for mutations to reach
// it with odd names, so this target writes a one-entry archive with the fuzzed
// name, type and link target using libarchive's writer, then reads it back.
// Property: a link, device, fifo, absolute or '..' name is never handed out
// (the entry's stored type is read back with plain libarchive to compare).
#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/error.h"
#include "decode/archive.h"
#include "decode/archive_util.h"
#include "fuzz/fuzz_util.h"

using namespace kaio;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::quiet();
  if (size < 2) return 0;
  static constexpr mode_t kTypes[] = {AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFCHR, AE_IFIFO, AE_IFREG /* hard link */};
  const int type_pick = data[0] % 6;
  const int format_pick = data[1] % 4;
  std::string rest(reinterpret_cast<const char*>(data + 2), size - 2);
  std::string name = rest.substr(0, rest.find('\0'));
  std::string link = rest.find('\0') == std::string::npos ? "target" : rest.substr(rest.find('\0') + 1);
  if (name.empty()) return 0;  // libarchive's writer refuses it

  decode::la::WritePtr w(archive_write_new());
  switch (format_pick) {
    case 0:
      archive_write_set_format_pax_restricted(w.get());
      break;
    case 1:
      archive_write_set_format_gnutar(w.get());
      break;
    case 2:
      archive_write_set_format_ustar(w.get());
      break;
    default:
      archive_write_set_format_zip(w.get());
      break;
  }
  static std::string buffer(1 << 20, '\0');
  size_t used = 0;
  if (archive_write_open_memory(w.get(), buffer.data(), buffer.size(), &used) != ARCHIVE_OK) return 0;
  decode::la::EntryPtr e(archive_entry_new());
  archive_entry_copy_pathname(e.get(), name.c_str());
  archive_entry_set_perm(e.get(), 0644);
  archive_entry_set_filetype(e.get(), kTypes[type_pick]);
  if (type_pick == 5) archive_entry_copy_hardlink(e.get(), link.c_str());
  if (type_pick == 2) archive_entry_copy_symlink(e.get(), link.c_str());
  const std::string body = "payload";
  archive_entry_set_size(e.get(), type_pick == 0 ? static_cast<la_int64_t>(body.size()) : 0);
  if (archive_write_header(w.get(), e.get()) < ARCHIVE_WARN) return 0;  // the format cannot hold this entry
  if (type_pick == 0) archive_write_data(w.get(), body.data(), body.size());
  if (archive_write_close(w.get()) != ARCHIVE_OK) return 0;

  // What the archive holds as a stream reader sees it: a format may not store
  // the type asked for (zip keeps a hard link as an empty regular file), and a
  // zip symlink's mode is only in the central directory, which streaming never
  // reads, so it arrives as a regular file holding the target's text (written
  // out as data, never followed).
  bool stored_regular = false;
  {
    decode::la::ReadPtr r(archive_read_new());
    archive_read_support_format_tar(r.get());
    archive_read_support_format_zip_streamable(r.get());
    archive_entry* got = nullptr;
    if (archive_read_open_memory(r.get(), buffer.data(), used) == ARCHIVE_OK &&
        archive_read_next_header(r.get(), &got) >= ARCHIVE_WARN) {
      stored_regular =
          archive_entry_filetype(got) == AE_IFREG && !archive_entry_hardlink(got) && !archive_entry_symlink(got);
    }
  }

  decode::ArchiveLimits limits;
  limits.member_globs = {"*"};
  try {
    decode::ArchiveReader reader(
        std::make_unique<fuzz::MemorySource>(reinterpret_cast<const uint8_t*>(buffer.data()), used, 4096, "fuzz.tar"),
        limits);
    decode::Member m;
    for (int i = 0; i < 4; ++i) {
      try {
        if (!reader.next(m)) break;
        KAIO_FUZZ_CHECK(fuzz::safe_member_path(m.path), "member name is safe");
        KAIO_FUZZ_CHECK(stored_regular, "only a regular file is handed out");
      } catch (const Error& err) {
        if (reader.broken()) break;
        KAIO_FUZZ_CHECK(err.kind() == ErrorKind::rejected, "a bad member is rejected, not something else");
      }
    }
  } catch (const Error&) {
  }
  return 0;
}
