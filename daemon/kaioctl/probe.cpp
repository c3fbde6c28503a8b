// `kaioctl probe FILE [--preview out.png [--window N]] [--frames T --stride S --fps F --size N]`:
// lists the video members of an archive (or a single video), the windows each
// would give, and the errors, through decode/'s archive reader and decoder;
// --preview writes a PNG contact sheet of the first clip that gives a window,
// a row per window (or only window N), each frame labelled with the time it
// samples. Returns 0 when every member is fine, 1 when any member failed or
// the preview could not be drawn, 2 on bad usage.
#include <algorithm>
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
#include "daemon/kaioctl/bitmap_font.h"
#include "daemon/kaioctl/commands.h"
#include "decode/archive.h"
#include "decode/file_source.h"
#include "decode/png.h"
#include "decode/shard.h"
#include "decode/video.h"

namespace kaio::ctl {
namespace {

using namespace kaio::decode;

constexpr const char* kUsage =
    "usage: kaioctl probe FILE [--preview out.png [--window N]] [--frames T] [--stride S] [--fps F] [--size N]\n"
    "       kaioctl probe --help\n";

constexpr const char* kHelp =
    "Decodes a video, or every video in a tar or zip archive, as kaiod would and lists each with the windows it\n"
    "gives and any error. Needs no kaiod.\n"
    "  --preview out.png  write a PNG contact sheet of the first clip that gives a window: a row per window\n"
    "                     (the first 16), its frames left to right, each labelled with the time it samples\n"
    "  --window N         only window N of that clip (from 0)\n"
    "  --frames T         frames per window (decode.frames; 16)\n"
    "  --stride S         sampled frames from one window's start to the next (decode.stride; 16)\n"
    "  --fps F            frames sampled per second (decode.fps; 4)\n"
    "  --size N           side of a frame in pixels, at least 8 (decode.size; 224)\n"
    "Exit code 0 when every video is fine, 1 when any failed or no preview was written, 2 on bad usage.\n";

// The most windows a preview shows without --window.
constexpr int kMaxPreviewRows = 16;

struct ProbeArgs {
  std::filesystem::path file;
  std::filesystem::path preview;
  std::optional<int> window;  // --window: the one window to preview
  WindowSpec spec;
  bool help = false;
};

ProbeArgs parse(const std::vector<std::string>& argv) {
  ProbeArgs a;
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help") {
      a.help = true;
      return a;
    }
    if (!arg.starts_with("--")) {
      if (!a.file.empty()) throw Error(ErrorKind::usage, "more than one FILE: " + std::string(arg));
      a.file = arg;
      continue;
    }
    if (i + 1 >= argv.size()) throw Error(ErrorKind::usage, "missing value for " + std::string(arg));
    const std::string& value = argv[++i];
    try {
      if (arg == "--preview") {
        a.preview = value;
      } else if (arg == "--window") {
        a.window = std::stoi(value);
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
  if (a.window && a.preview.empty()) throw Error(ErrorKind::usage, "--window needs --preview");
  if (a.window && *a.window < 0) throw Error(ErrorKind::usage, "--window must be 0 or more");
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

constexpr const char* kNeither =
    "neither a video nor an archive kaio reads (videos: MP4/MOV, Matroska/WebM, AVI, MPEG-TS; archives: tar or zip, "
    "plain or compressed)";

// The time sample k is taken at, as a label: "12.25s", "1:02.25", "1:02:03.25".
std::string sample_label(int64_t k, double fps) {
  auto centis = std::llround(static_cast<double>(k) / fps * 100);
  long long cs = centis % 100, s = centis / 100 % 60, m = centis / 6000 % 60, h = centis / 360000;
  char text[48];
  if (centis < 6000) {
    std::snprintf(text, sizeof text, "%lld.%02llds", s, cs);
  } else if (h == 0) {
    std::snprintf(text, sizeof text, "%lld:%02lld.%02lld", m, s, cs);
  } else {
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld.%02lld", h, m, s, cs);
  }
  return text;
}

// Where things go on the contact sheet: a row per window, led by its index
// ("w3"), its frames left to right in cells kGap apart, each frame's label
// under it. Labels are drawn at twice the font's size for frames of 160 px
// and more.
struct SheetLayout {
  static constexpr int kGap = 2;
  int scale = 1;
  int frame = 0;       // a frame's side
  int cell_width = 0;  // the frame, or its label and a gap each side when that is wider
  int label_height = 0;
  int margin = 0;  // left of the first cell: the window index
  int row_height = 0;
  int width = 0, height = 0;

  SheetLayout(const ShardReader& shard, const WindowSpec& spec, const std::vector<int>& rows) {
    frame = shard.width();
    scale = frame >= 160 ? 2 : 1;
    int widest_label = 0;
    for (int w : rows)
      for (int f = 0; f < shard.frames(); ++f)
        widest_label = std::max(widest_label, text_width(sample_label(int64_t{w} * spec.stride + f, spec.fps), scale));
    cell_width = std::max(frame, widest_label + 2 * kGap);
    label_height = kGlyphHeight * scale + 2 * kGap;
    margin = text_width("w" + std::to_string(rows.back()), scale) + 2 * kGap;
    row_height = frame + label_height;
    width = margin + shard.frames() * (cell_width + kGap);
    height = kGap + static_cast<int>(rows.size()) * (row_height + kGap);
  }
};

// The windows in `rows` of `shard`, labelled, as a PNG at `out`.
void write_contact_sheet(const ShardReader& shard, const WindowSpec& spec, const std::vector<int>& rows,
                         const std::filesystem::path& out) {
  constexpr uint8_t kBackground = 24;
  constexpr uint8_t kInk[3] = {235, 235, 235};
  const SheetLayout l(shard, spec, rows);
  std::vector<uint8_t> sheet(static_cast<size_t>(l.width) * l.height * 3, kBackground);
  RgbImage image{sheet.data(), l.width, l.height};
  const size_t n = static_cast<size_t>(l.frame);
  for (size_t r = 0; r < rows.size(); ++r) {
    int w = rows[r];
    int top = SheetLayout::kGap + static_cast<int>(r) * (l.row_height + SheetLayout::kGap);
    draw_text(image, SheetLayout::kGap, top + (l.frame - kGlyphHeight * l.scale) / 2, "w" + std::to_string(w), l.scale,
              kInk);
    const uint8_t* window = shard.window(w);
    for (int f = 0; f < shard.frames(); ++f) {
      int left = l.margin + f * (l.cell_width + SheetLayout::kGap);
      int frame_left = left + (l.cell_width - l.frame) / 2;
      for (size_t y = 0; y < n; ++y) {
        std::memcpy(&sheet[((top + y) * l.width + frame_left) * 3], window + shard.frame_bytes() * f + y * n * 3,
                    n * 3);
      }
      std::string label = sample_label(int64_t{w} * spec.stride + f, spec.fps);
      draw_text(image, left + (l.cell_width - text_width(label, l.scale)) / 2, top + l.frame + SheetLayout::kGap, label,
                l.scale, kInk);
    }
  }
  write_png(out, sheet.data(), l.width, l.height);
}

// Decodes `clip` (member `member` of the probed file) and draws its preview.
// False, having said why, when --window names a window the clip lacks.
bool write_preview(const std::filesystem::path& clip, const std::string& member, const ProbeArgs& args,
                   const std::filesystem::path& tmp) {
  auto shard_file = tmp / "preview.shard";
  decode_clip(clip, ClipOrigin{args.file.string(), member, ""}, args.spec, shard_file, DecodeOptions{});
  ShardReader shard(shard_file);
  int windows = shard.windows();
  if (args.window && *args.window >= windows) {
    std::printf("%s: error: --window %d is out of range: the clip has %d windows (0-%d), no preview written\n",
                member.c_str(), *args.window, windows, windows - 1);
    return false;
  }
  std::vector<int> rows;
  if (args.window) {
    rows.push_back(*args.window);
  } else {
    for (int w = 0; w < std::min(windows, kMaxPreviewRows); ++w) rows.push_back(w);
  }
  write_contact_sheet(shard, args.spec, rows, args.preview);
  std::string shown =
      rows.size() == 1 ? "window " + std::to_string(rows[0]) : "windows 0-" + std::to_string(rows.back());
  std::printf("preview of %s written to %s: %s of %d, %d frames each, labelled with the time each samples\n",
              member.c_str(), args.preview.c_str(), shown.c_str(), windows, shard.frames());
  if (!args.window && windows > kMaxPreviewRows)
    std::printf("preview capped at %d of %d windows; --window N shows any one\n", kMaxPreviewRows, windows);
  return true;
}

}  // namespace

int probe_command(const Invocation& in) {
  ProbeArgs args;
  try {
    args = parse(in.args);
  } catch (const Error& e) {
    std::cerr << "kaioctl probe: " << e.what() << "\n" << kUsage;
    return 2;
  }
  if (args.help) {
    std::cout << kUsage << kHelp;
    return 0;
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
          if (!write_preview(clip, m.path, args, tmp.path())) ++failures;
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

}  // namespace kaio::ctl
