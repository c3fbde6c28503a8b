#pragma once
// Owners for libarchive objects, shared by the archive reader, the probe
// command, kaio-mkdata's writer and the fuzz targets (like av_util.h for FFmpeg).
#include <archive.h>
#include <archive_entry.h>

#include <memory>

namespace kaio::decode::la {

struct ReadFreer {
  void operator()(archive* a) const { archive_read_free(a); }
};
struct WriteFreer {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryFreer {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

using ReadPtr = std::unique_ptr<archive, ReadFreer>;
using WritePtr = std::unique_ptr<archive, WriteFreer>;
using EntryPtr = std::unique_ptr<archive_entry, EntryFreer>;

}  // namespace kaio::decode::la
