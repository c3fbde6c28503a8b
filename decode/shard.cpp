#include "decode/shard.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "common/error.h"
#include "common/fs.h"
#include "decode/video.h"

namespace kaio::decode {
namespace {

uint64_t align64(uint64_t n) {
  return (n + 63) & ~uint64_t{63};
}

// Fixed part of one window's metadata record: time + three length prefixes.
constexpr uint64_t kMetaFixedBytes = 8 + 3 * 4;

struct Header {
  char magic[8];
  uint32_t version, frames, height, width, channels, windows;
  uint64_t window_bytes, meta_offset, meta_bytes;
};
static_assert(sizeof(Header) <= kShardHeaderBytes);

void put_string(std::string& out, const std::string& s) {
  uint32_t n = static_cast<uint32_t>(s.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  out.append(s);
}

[[noreturn]] void corrupt(const std::filesystem::path& path, const std::string& why) {
  throw Error(ErrorKind::corrupt, "shard " + path.string() + ": " + why);
}

}  // namespace

uint64_t window_bytes(const WindowSpec& spec) {
  return align64(static_cast<uint64_t>(spec.frames) * spec.size * spec.size * 3);
}

uint64_t shard_bytes(const WindowSpec& spec, int windows, size_t meta_bytes) {
  uint64_t n = static_cast<uint64_t>(windows < 0 ? 0 : windows);
  return kShardHeaderBytes + n * window_bytes(spec) + n * (kMetaFixedBytes + meta_bytes);
}

ShardWriter::ShardWriter(std::filesystem::path path, const WindowSpec& spec, ShardSpace space)
    : path_(std::move(path)),
      frames_(static_cast<uint32_t>(spec.frames)),
      height_(static_cast<uint32_t>(spec.size)),
      width_(static_cast<uint32_t>(spec.size)),
      window_bytes_(window_bytes(spec)),
      space_(std::move(space)),
      held_(space_ ? 0 : UINT64_MAX) {
  tmp_ = path_;
  tmp_ += ".tmp";
  fd_.reset(::open(tmp_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd_.get() < 0) throw_errno("create shard", tmp_.string());
}

ShardWriter::~ShardWriter() {
  if (fd_.get() >= 0) {
    fd_.reset();
    ::unlink(tmp_.c_str());
  }
}

void ShardWriter::write_at(uint64_t offset, const void* data, size_t size) {
  auto* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::pwrite(fd_.get(), p, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write shard", tmp_.string());
    }
    p += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
}

uint64_t ShardWriter::finished_bytes() const {
  return kShardHeaderBytes + infos_.size() * window_bytes_ + meta_bytes_;
}

// Bytes on disk never exceed bytes held: every write is preceded by a hold of
// the size the finished file will have, so finish() needs nothing more.
void ShardWriter::hold(uint64_t bytes) {
  if (bytes <= held_) return;
  held_ = space_(bytes);
  if (held_ < bytes) {
    throw Error(ErrorKind::internal,
                "shard " + tmp_.string() + ": " + std::to_string(held_) + " bytes held for " + std::to_string(bytes));
  }
}

void ShardWriter::add_window(std::span<const uint8_t> frames, WindowInfo info) {
  uint64_t expected = static_cast<uint64_t>(frames_) * height_ * width_ * 3;
  if (frames.size() != expected) {
    throw Error(ErrorKind::internal, "shard " + tmp_.string() + ": window of " + std::to_string(frames.size()) +
                                         " bytes, expected " + std::to_string(expected));
  }
  if (infos_.size() >= UINT32_MAX) throw Error(ErrorKind::rejected, "shard " + tmp_.string() + ": too many windows");
  uint64_t record = kMetaFixedBytes + info.source_file.size() + info.member.size() + info.caption.size();
  hold(finished_bytes() + window_bytes_ + record);
  write_at(kShardHeaderBytes + infos_.size() * window_bytes_, frames.data(), frames.size());
  infos_.push_back(std::move(info));
  meta_bytes_ += record;
}

uint64_t ShardWriter::finish() {
  hold(finished_bytes());  // only a shard with no window gets here with less held
  std::string meta;
  for (const auto& info : infos_) {
    meta.append(reinterpret_cast<const char*>(&info.first_time), 8);
    put_string(meta, info.source_file);
    put_string(meta, info.member);
    put_string(meta, info.caption);
  }
  Header h{};
  std::memcpy(h.magic, kShardMagic, 8);
  h.version = kShardVersion;
  h.frames = frames_;
  h.height = height_;
  h.width = width_;
  h.channels = 3;
  h.windows = static_cast<uint32_t>(infos_.size());
  h.window_bytes = window_bytes_;
  h.meta_offset = kShardHeaderBytes + infos_.size() * window_bytes_;
  h.meta_bytes = meta.size();
  if (h.meta_bytes != meta_bytes_)
    throw Error(ErrorKind::internal, "shard " + tmp_.string() + ": metadata size drifted");
  write_at(h.meta_offset, meta.data(), meta.size());
  char header[kShardHeaderBytes] = {};
  std::memcpy(header, &h, sizeof h);
  write_at(0, header, sizeof header);
  if (::fsync(fd_.get()) != 0) throw_errno("fsync shard", tmp_.string());
  fd_.reset();
  rename_durably(tmp_, path_);
  return h.meta_offset + h.meta_bytes;
}

ShardReader::ShardReader(const std::filesystem::path& path) : path_(path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw_errno("open shard", path.string());
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("stat shard", path.string());
  size_t size = static_cast<size_t>(st.st_size);
  if (size < kShardHeaderBytes) corrupt(path, "file of " + std::to_string(size) + " bytes is shorter than the header");
  map_ = MappedFile(fd.get(), size, "mmap shard", path.string());
  fd.reset();  // the mapping outlives the descriptor
  const uint8_t* base = map_.data();

  Header h{};
  std::memcpy(&h, base, sizeof h);
  if (std::memcmp(h.magic, kShardMagic, 8) != 0) corrupt(path, "bad magic (not a kaio shard)");
  if (h.version != kShardVersion) corrupt(path, "unsupported version " + std::to_string(h.version));
  if (h.channels != 3 || h.frames == 0 || h.height == 0 || h.width == 0 || h.height > 65536 || h.width > 65536 ||
      h.frames > 65536) {
    corrupt(path, "bad geometry in header");
  }
  uint64_t raw = static_cast<uint64_t>(h.frames) * h.height * h.width * 3;
  if (h.window_bytes != align64(raw)) corrupt(path, "window size does not match the geometry");
  if (h.meta_offset != kShardHeaderBytes + static_cast<uint64_t>(h.windows) * h.window_bytes ||
      h.meta_offset + h.meta_bytes != size) {
    corrupt(path, "window count and metadata do not match the file size");
  }
  frames_ = h.frames;
  height_ = h.height;
  width_ = h.width;
  window_bytes_ = h.window_bytes;
  const uint8_t* p = base + h.meta_offset;
  const uint8_t* end = p + h.meta_bytes;
  auto get_string = [&](std::string& out) {
    uint32_t n = 0;
    if (end - p < 4) corrupt(path, "metadata truncated");
    std::memcpy(&n, p, 4);
    p += 4;
    if (static_cast<uint64_t>(end - p) < n) corrupt(path, "metadata truncated");
    out.assign(reinterpret_cast<const char*>(p), n);
    p += n;
  };
  infos_.resize(h.windows);
  for (auto& info : infos_) {
    if (end - p < 8) corrupt(path, "metadata truncated");
    std::memcpy(&info.first_time, p, 8);
    p += 8;
    get_string(info.source_file);
    get_string(info.member);
    get_string(info.caption);
  }
  if (p != end) corrupt(path, "trailing bytes after the metadata");
}

const uint8_t* ShardReader::window(int i) const {
  if (i < 0 || i >= windows()) {
    throw Error(ErrorKind::internal, "shard " + path_.string() + ": window " + std::to_string(i) + " out of range");
  }
  return map_.data() + kShardHeaderBytes + static_cast<uint64_t>(i) * window_bytes_;
}

const WindowInfo& ShardReader::info(int i) const {
  window(i);  // range check
  return infos_[static_cast<size_t>(i)];
}

}  // namespace kaio::decode
