// The archive reader over a stream: tar (any filter), zip, or a bare media file.
// Properties: only kaio::Error escapes; every member handed out has a safe
// name; once broken() every call rethrows; the expansion stays under the ratio;
// a tar is never read as a bare media file.
#include "decode/archive.h"

#include <cstdint>

#include "common/error.h"
#include "fuzz/fuzz_util.h"

using namespace kaio;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::quiet();
  decode::ArchiveLimits limits;
  limits.member_globs = {"*"};
  limits.max_member_size = 1 << 20;
  limits.max_expand_ratio = 1000;
  // The chunk size follows from the input, so reads split at many places.
  size_t chunk = 1 + size % 8191;
  try {
    decode::ArchiveReader reader(std::make_unique<fuzz::MemorySource>(data, size, chunk, "fuzz-input"), limits);
    decode::Member m;
    for (int i = 0; i < 4096; ++i) {
      try {
        if (!reader.next(m)) break;
        KAIO_FUZZ_CHECK(fuzz::safe_member_path(m.path), "member name is safe");
        // A tar header is never mistaken for a bare media file (named after the source).
        const bool tar = size > 262 && std::memcmp(data + 257, "ustar", 5) == 0;
        KAIO_FUZZ_CHECK(!(tar && m.path == "fuzz-input"), "a tar is read as a tar");
        if (m.index == 0) reader.extract_to(fuzz::scratch_dir() / "member", nullptr);
      } catch (const Error& e) {
        if (reader.broken()) {
          bool rethrew = false;
          try {
            reader.next(m);
          } catch (const Error&) {
            rethrew = true;
          }
          KAIO_FUZZ_CHECK(rethrew, "a broken reader rethrows");
          break;
        }
        // A rejected member: the reader moves past it on the next call.
      }
    }
    if (reader.bytes_in() >= 64 * 1024)
      KAIO_FUZZ_CHECK(reader.bytes_out() <= 1000 * reader.bytes_in() + (1 << 20), "expansion bounded by the ratio");
  } catch (const Error&) {
    // Rejected or corrupt before the first member: the expected outcome for junk.
  }
  return 0;
}
