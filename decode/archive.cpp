#include "decode/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <exception>

#include "common/error.h"
#include "common/fd.h"
#include "common/fs.h"
#include "common/log.h"
#include "decode/archive_util.h"

namespace kaio::decode {
namespace {

constexpr size_t kBlock = size_t{64} * 1024;
constexpr size_t kSniffBytes = 4096;
// The ratio is judged against at least this much input, so a small honest
// archive whose first block expands well is not mistaken for a bomb.
constexpr uint64_t kRatioFloorIn = uint64_t{64} * 1024;
// A claim grows in steps of at least this much when a member outgrows it.
constexpr uint64_t kClaimStep = uint64_t{16} * 1024 * 1024;

enum class Kind { archive, media };

bool starts_with(std::string_view data, size_t offset, std::string_view magic) {
  return data.size() >= offset + magic.size() && data.substr(offset, magic.size()) == magic;
}

// Media containers recognised by their first bytes; everything else goes to libarchive.
bool looks_like_media(std::string_view d) {
  // A tar's first bytes are its first member's name: "the_free_clip.mp4" has
  // "free" at offset 4 and made the whole tar pass for one mp4.
  if (starts_with(d, 257, "ustar")) return false;
  static constexpr std::array<std::string_view, 6> mp4_boxes = {"ftyp", "moov", "mdat", "free", "wide", "skip"};
  for (auto box : mp4_boxes) {
    if (starts_with(d, 4, box)) return true;
  }
  if (starts_with(d, 0, "\x1a\x45\xdf\xa3")) return true;  // Matroska / WebM
  if (starts_with(d, 0, "RIFF") && starts_with(d, 8, "AVI ")) return true;
  return d.size() > 188 && d[0] == 0x47 && d[188] == 0x47;  // MPEG-TS
}

std::string hostile_reason(archive_entry* e, std::string_view path) {
  if (archive_entry_hardlink(e)) return "hard link";
  auto type = archive_entry_filetype(e);
  if (type == AE_IFLNK || archive_entry_symlink(e)) return "symbolic link";
  if (type != AE_IFREG && type != AE_IFDIR) return "not a regular file (device, fifo or socket)";
  if (path.empty()) return "empty name";
  for (unsigned char c : path)
    if (c < 0x20 || c == 0x7f) return "control character in name";
  if (path.front() == '/' || path.front() == '\\' || (path.size() > 1 && path[1] == ':')) return "absolute path";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find_first_of("/\\", start);
    if (end == std::string_view::npos) end = path.size();
    if (path.substr(start, end - start) == "..") return "'..' in path";
    start = end + 1;
  }
  return {};
}

uint64_t fnv1a(std::string_view a, std::string_view b, uint64_t seed) {
  uint64_t h = seed;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 0x100000001b3ULL;
    }
  };
  mix(a);
  mix(std::string_view("\0", 1));
  mix(b);
  return h;
}

}  // namespace

ArchiveLimits limits_from_config(const kaio::DecodeConfig& c) {
  return ArchiveLimits{c.members, c.max_member_size, c.max_expand_ratio};
}

std::string member_id(std::string_view archive_path, std::string_view member_path) {
  char out[33];
  std::snprintf(out, sizeof out, "%016llx%016llx",
                static_cast<unsigned long long>(fnv1a(archive_path, member_path, 0xcbf29ce484222325ULL)),
                static_cast<unsigned long long>(fnv1a(archive_path, member_path, 0x84222325cbf29ce4ULL)));
  return out;
}

struct ArchiveReader::Impl {
  std::unique_ptr<kaio::ByteSource> source;
  ArchiveLimits limits;
  std::string name;
  Kind kind = Kind::archive;
  la::ReadPtr ar;
  std::vector<std::byte> buffer = std::vector<std::byte>(kBlock);  // input blocks lent to libarchive
  std::vector<std::byte> data = std::vector<std::byte>(kBlock);    // member data read out of it
  std::string sniffed;  // first bytes, replayed before the rest of the source
  size_t sniffed_pos = 0;
  std::exception_ptr source_error;  // what the source threw inside libarchive's callback
  std::exception_ptr broken;        // once set, every call rethrows it
  uint64_t in = 0;                  // bytes from the source
  uint64_t data_out = 0;            // member data bytes read (extracted or drained)
  bool pending_data = false;        // current entry's data not read yet
  bool media_done = false;
  std::string current;  // current entry's path, for messages
  int matched = 0;
  int skipped = 0;

  size_t pull(std::byte* out, size_t n) {
    if (sniffed_pos < sniffed.size()) {
      size_t k = std::min(n, sniffed.size() - sniffed_pos);
      std::memcpy(out, sniffed.data() + sniffed_pos, k);
      sniffed_pos += k;
      return k;
    }
    size_t k = source->read({out, n});
    in += k;
    return k;
  }

  static la_ssize_t read_callback(archive* a, void* self, const void** block) {
    auto* impl = static_cast<Impl*>(self);
    try {
      *block = impl->buffer.data();
      return static_cast<la_ssize_t>(impl->pull(impl->buffer.data(), impl->buffer.size()));
    } catch (...) {
      impl->source_error = std::current_exception();
      archive_set_error(a, EIO, "source read failed");
      return -1;
    }
  }

  void sniff() {
    sniffed.resize(kSniffBytes);
    size_t got = 0;
    while (got < kSniffBytes) {
      size_t k = source->read({reinterpret_cast<std::byte*>(sniffed.data()) + got, kSniffBytes - got});
      if (k == 0) break;
      got += k;
    }
    sniffed.resize(got);
    in += got;
    if (got == 0) fail(Error(ErrorKind::corrupt, "archive " + name + ": empty file"));
    if (looks_like_media(sniffed)) {
      kind = Kind::media;
      return;
    }
    ar.reset(archive_read_new());
    if (!ar) throw Error(ErrorKind::internal, "archive_read_new failed");
    archive_read_support_filter_all(ar.get());
    archive_read_support_format_tar(ar.get());
    archive_read_support_format_zip_streamable(ar.get());
    if (archive_read_open(ar.get(), this, nullptr, read_callback, nullptr) != ARCHIVE_OK) stream_failed("opening");
  }

  [[noreturn]] void fail(const Error& e) {
    broken = std::make_exception_ptr(e);
    std::rethrow_exception(broken);
  }

  [[noreturn]] void stream_failed(const std::string& where) {
    if (source_error) {
      broken = source_error;
      std::rethrow_exception(broken);
    }
    const char* msg = archive_error_string(ar.get());
    fail(Error(ErrorKind::corrupt,
               "archive " + name + ": broken stream " + where + ": " + (msg ? msg : "unknown error")));
  }

  uint64_t out_bytes() const {
    uint64_t filtered = ar ? static_cast<uint64_t>(std::max<la_int64_t>(archive_filter_bytes(ar.get(), 0), 0)) : 0;
    return std::max(filtered, data_out);
  }

  void check_ratio() {
    if (kind == Kind::media) return;
    uint64_t out = out_bytes();
    double allowed = limits.max_expand_ratio * static_cast<double>(std::max(in, kRatioFloorIn));
    if (static_cast<double>(out) > allowed) {
      spdlog::warn("archive {}: rejected as a bomb at member {}: {} bytes out of {} in", name, current, out, in);
      fail(Error(ErrorKind::rejected, "archive " + name + ": expands past decode.max_expand_ratio " +
                                          std::to_string(limits.max_expand_ratio) + " (" + std::to_string(out) +
                                          " bytes from " + std::to_string(in) + ") at member " + current));
    }
  }

  // Reads the current entry's data, calling sink for each block.
  template <typename Sink>
  void read_data(Sink&& sink) {
    pending_data = false;
    while (true) {
      la_ssize_t n = archive_read_data(ar.get(), data.data(), data.size());
      if (n == 0) return;
      if (n < 0) stream_failed("in member " + printable(current));
      data_out += static_cast<uint64_t>(n);
      check_ratio();
      sink(data.data(), static_cast<size_t>(n));
    }
  }

  // libarchive stops at the archive's end marker, which may come before the
  // source's last byte (a gzip trailer, padding). Reading on to the source's
  // end is what makes a stream give its verdict (size and hash), so a byte
  // flipped on the way fails the file instead of passing unseen.
  void read_source_to_end() {
    try {
      while (pull(buffer.data(), buffer.size()) > 0) {
      }
    } catch (...) {
      broken = std::current_exception();
      throw;
    }
  }

  void drain() {
    if (!pending_data) return;
    read_data([](const std::byte*, size_t) {});
  }

  bool next(Member& m) {
    if (broken) std::rethrow_exception(broken);
    if (kind == Kind::media) return next_media(m);
    drain();
    while (true) {
      archive_entry* e = nullptr;
      int rc = archive_read_next_header(ar.get(), &e);
      if (rc == ARCHIVE_EOF) {
        read_source_to_end();
        return false;
      }
      // ARCHIVE_RETRY is a header that could not be read (a corrupt tar): the
      // entry is not valid and reading its data would misuse libarchive.
      if (rc < ARCHIVE_WARN || rc == ARCHIVE_RETRY)
        stream_failed(current.empty() ? std::string("at the first member") : "after member " + printable(current));
      const char* raw = archive_entry_pathname_utf8(e);
      if (!raw) raw = archive_entry_pathname(e);
      current = raw ? raw : "";
      pending_data = true;
      check_ratio();
      if (archive_entry_filetype(e) == AE_IFDIR && !archive_entry_hardlink(e)) continue;
      std::string why = hostile_reason(e, current);
      if (why.empty() && archive_entry_size_is_set(e) &&
          static_cast<uint64_t>(archive_entry_size(e)) > limits.max_member_size) {
        why = "size " + std::to_string(archive_entry_size(e)) + " over decode.max_member_size";
      }
      if (!why.empty()) {
        spdlog::warn("archive {}: member {} rejected: {}", name, printable(current), why);
        throw Error(ErrorKind::rejected, "archive " + name + ": member " + printable(current) + " rejected: " + why);
      }
      if (!matches(current)) {
        ++skipped;
        drain();
        continue;
      }
      m.path = current;
      m.size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
      m.index = matched++;
      return true;
    }
  }

  bool next_media(Member& m) {
    if (media_done) return false;
    media_done = true;
    current = std::filesystem::path(name).filename().string();
    if (!matches(current)) {
      ++skipped;
      return false;
    }
    pending_data = true;
    m.path = current;
    m.size = -1;
    m.index = matched++;
    return true;
  }

  bool matches(const std::string& path) const {
    return std::any_of(limits.member_globs.begin(), limits.member_globs.end(),
                       [&](const std::string& g) { return ::fnmatch(g.c_str(), path.c_str(), 0) == 0; });
  }

  void extract_to(const std::filesystem::path& dest, kaio::SpaceClaim* claim) {
    if (broken) std::rethrow_exception(broken);
    if (!pending_data) {
      throw Error(ErrorKind::internal, "archive " + name + ": extract_to without a current member");
    }
    auto tmp = dest;
    tmp += ".tmp";
    Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (out.get() < 0) throw_errno("create", tmp.string());
    uint64_t written = 0;
    auto sink = [&](const std::byte* data, size_t n) {
      written += n;
      if (written > limits.max_member_size) {
        throw Error(ErrorKind::rejected,
                    "archive " + name + ": member " + current + " rejected: larger than decode.max_member_size");
      }
      if (claim && written > claim->bytes()) claim->resize(std::max(written, claim->bytes() + kClaimStep));
      write_all(out.get(), data, n, tmp);
    };
    try {
      if (kind == Kind::media) {
        copy_media(sink);
      } else {
        read_data(sink);
      }
      if (::fsync(out.get()) != 0) throw_errno("fsync", tmp.string());
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
    out.reset();
    rename_durably(tmp, dest);
    spdlog::debug("archive {}: extracted member {} ({} bytes) to {}", name, current, written, dest.string());
  }

  template <typename Sink>
  void copy_media(Sink&& sink) {
    pending_data = false;
    while (size_t n = pull(data.data(), data.size())) sink(data.data(), n);
  }

  static void write_all(int fd, const std::byte* data, size_t n, const std::filesystem::path& path) {
    while (n > 0) {
      ssize_t w = ::write(fd, data, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw_errno("write", path.string());
      }
      data += w;
      n -= static_cast<size_t>(w);
    }
  }
};

ArchiveReader::ArchiveReader(std::unique_ptr<kaio::ByteSource> source, ArchiveLimits limits)
    : impl_(std::make_unique<Impl>()) {
  impl_->name = source->describe();
  impl_->source = std::move(source);
  impl_->limits = std::move(limits);
  impl_->sniff();
}

ArchiveReader::~ArchiveReader() = default;

bool ArchiveReader::next(Member& member) {
  return impl_->next(member);
}
void ArchiveReader::extract_to(const std::filesystem::path& dest, kaio::SpaceClaim* claim) {
  impl_->extract_to(dest, claim);
}
bool ArchiveReader::broken() const {
  return impl_->broken != nullptr;
}
std::string ArchiveReader::member_path() const {
  return impl_->current;
}
int ArchiveReader::skipped() const {
  return impl_->skipped;
}
std::string ArchiveReader::describe() const {
  return impl_->name;
}
uint64_t ArchiveReader::bytes_in() const {
  return impl_->in;
}
uint64_t ArchiveReader::bytes_out() const {
  return impl_->out_bytes();
}

bool archive_format_recognised(const std::filesystem::path& file) {
  la::ReadPtr ar(archive_read_new());
  if (!ar) return true;
  archive_read_support_filter_all(ar.get());
  archive_read_support_format_tar(ar.get());
  archive_read_support_format_zip_streamable(ar.get());
  if (archive_read_open_filename(ar.get(), file.c_str(), kBlock) == ARCHIVE_OK) return true;
  // libarchive's ARCHIVE_ERRNO_FILE_FORMAT ("Unrecognized archive format") is
  // EILSEQ on Linux; archive.h only lists it in a comment.
  return archive_errno(ar.get()) != EILSEQ;
}

}  // namespace kaio::decode
