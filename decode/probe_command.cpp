#include "decode/probe_command.h"

#include <archive.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "decode/archive.h"
#include "decode/archive_util.h"
#include "decode/file_source.h"
#include "decode/png.h"
#include "decode/shard.h"
#include "decode/video.h"

namespace kaio::decode {
namespace {

constexpr const char* kUsage =
    "usage: kaioctl probe FILE [--preview out.png] [--frames T] [--stride S] [--fps F] [--size N]\n";

struct ProbeArgs {
  std::filesystem::path file;
  std::filesystem::path preview;
  WindowSpec spec;
};

ProbeArgs parse(int argc, char** argv) {
  ProbeArgs a;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (!arg.starts_with("--")) {
      if (!a.file.empty()) throw Error(ErrorKind::usage, "more than one FILE: " + std::string(arg));
      a.file = arg;
      continue;
    }
    if (i + 1 >= argc) throw Error(ErrorKind::usage, "missing value for " + std::string(arg));
    std::string value = argv[++i];
    try {
      if (arg == "--preview") {
        a.preview = value;
      } else if (arg == "--frames") {
        a.spec.frames = std::stoi(value);
      } else if (arg == "--stride") {
        a.spec.stride = std::stoi(value);
      } else if (arg == "--fps") {
        a.spec.fps = std::stod(value);
      } else if (arg == "--size") {
        a.spec.size = std::stoi(value);
      } else {
        throw Error(ErrorKind::usage, "unknown option " + std::string(arg));
      }
    } catch (const std::logic_error&) {  // std::stoi and std::stod
      throw Error(ErrorKind::usage, "bad number for " + std::string(arg) + ": " + value);
    }
  }
  if (a.file.empty()) throw Error(ErrorKind::usage, "FILE is required");
  if (a.spec.frames < 1 || a.spec.stride < 1 || a.spec.size < 8 || !(a.spec.fps > 0)) {
    throw Error(ErrorKind::usage, "--frames, --stride, --fps must be positive and --size at least 8");
  }
  return a;
}

// A private folder for extracted members, removed on exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kaioctl-probe-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw_errno("mkdtemp", tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Whether the archive reader's libarchive setup (tar or zip, any compression
// filter) recognises the file's format. Only a format error answers no: a file
// that cannot be opened keeps the reader's own message.
bool archive_format_recognised(const std::filesystem::path& file) {
  la::ReadPtr ar(archive_read_new());
  if (!ar) return true;
  archive_read_support_filter_all(ar.get());
  archive_read_support_format_tar(ar.get());
  archive_read_support_format_zip_streamable(ar.get());
  if (archive_read_open_filename(ar.get(), file.c_str(), 64 * 1024) == ARCHIVE_OK) return true;
  // libarchive's ARCHIVE_ERRNO_FILE_FORMAT ("Unrecognized archive format") is
  // EILSEQ on Linux; archive.h only lists it in a comment.
  return archive_errno(ar.get()) != EILSEQ;
}

constexpr const char* kNeither =
    "neither a video nor an archive kaio reads (videos: MP4/MOV, Matroska/WebM, AVI, MPEG-TS; archives: tar or zip, "
    "plain or compressed)";

// The first window's frames in a grid, ceil(sqrt(T)) columns.
void write_contact_sheet(const ShardReader& shard, const std::filesystem::path& out) {
  int t = shard.frames(), n = shard.width();
  int cols = static_cast<int>(std::ceil(std::sqrt(t)));
  int rows = (t + cols - 1) / cols;
  int w = cols * n, h = rows * n;
  std::vector<uint8_t> sheet(static_cast<size_t>(w) * h * 3, 0);
  const uint8_t* window = shard.window(0);
  for (int f = 0; f < t; ++f) {
    int ox = (f % cols) * n, oy = (f / cols) * n;
    for (int y = 0; y < n; ++y) {
      std::memcpy(&sheet[(static_cast<size_t>(oy + y) * w + ox) * 3],
                  window + shard.frame_bytes() * f + static_cast<size_t>(y) * n * 3, static_cast<size_t>(n) * 3);
    }
  }
  write_png(out, sheet.data(), w, h);
}

}  // namespace

int run_probe_command(int argc, char** argv) {
  ProbeArgs args;
  try {
    args = parse(argc, argv);
  } catch (const Error& e) {
    std::cerr << "kaioctl probe: " << e.what() << "\n" << kUsage;
    return 2;
  }
  int failures = 0;
  bool preview_done = args.preview.empty();
  try {
    TempDir tmp;
    ArchiveLimits limits;
    limits.member_globs = {"*.mp4", "*.m4v", "*.mov", "*.mkv", "*.webm", "*.avi"};
    // A file that is neither is named as such, not as a broken archive.
    std::error_code size_error;
    if (std::filesystem::is_regular_file(args.file) && std::filesystem::file_size(args.file, size_error) == 0 &&
        !size_error) {
      std::printf("%s: error: empty file: %s\n", args.file.c_str(), kNeither);
      return 1;
    }
    std::unique_ptr<ArchiveReader> opened;
    try {
      opened = std::make_unique<ArchiveReader>(std::make_unique<FileSource>(args.file), limits);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::corrupt && !archive_format_recognised(args.file)) {
        std::printf("%s: error: %s\n", args.file.c_str(), kNeither);
        return 1;
      }
      throw;
    }
    ArchiveReader& reader = *opened;
    Member m;
    while (true) {
      try {
        if (!reader.next(m)) break;
      } catch (const Error& e) {
        if (reader.broken()) throw;
        std::printf("%s: error: %s\n", reader.member_path().c_str(), e.what());
        ++failures;
        continue;
      }
      auto clip = tmp.path() / (member_id(args.file.string(), m.path) + ".video");
      try {
        reader.extract_to(clip, nullptr);
        auto p = probe_clip(clip, args.spec);
        std::printf("%s: %dx%d %s, %.2f s at %.2f fps, rotation %d -> %lld frames at %.2f fps, %d windows\n",
                    m.path.c_str(), p.width, p.height, p.codec.c_str(), p.duration, p.fps, p.rotation,
                    static_cast<long long>(p.sampled_frames), args.spec.fps, p.expected_windows);
        if (!preview_done && p.expected_windows > 0) {
          auto shard = tmp.path() / "preview.shard";
          decode_clip(clip, ClipOrigin{args.file.string(), m.path, ""}, args.spec, shard, DecodeOptions{});
          write_contact_sheet(ShardReader(shard), args.preview);
          std::printf("preview of %s written to %s\n", m.path.c_str(), args.preview.c_str());
          preview_done = true;
        }
      } catch (const Error& e) {
        if (reader.broken()) throw;
        std::printf("%s: error: %s\n", m.path.c_str(), e.what());
        ++failures;
      }
      std::error_code ec;
      std::filesystem::remove(clip, ec);
    }
    if (reader.skipped() > 0) std::printf("%d other members skipped\n", reader.skipped());
  } catch (const Error& e) {
    std::printf("%s: error: %s\n", args.file.c_str(), e.what());
    return 1;
  }
  if (!preview_done) std::printf("no clip gave a window, no preview written\n");
  return failures > 0 || !preview_done ? 1 : 0;
}

}  // namespace kaio::decode
