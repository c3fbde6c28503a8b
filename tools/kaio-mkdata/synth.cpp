#include "synth.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

extern "C" {
#include <libavutil/opt.h>
}

#include "common/error.h"
#include "decode/archive_util.h"
#include "decode/av_util.h"

namespace kaio::mkdata {
namespace {

namespace av = decode::av;
namespace la = decode::la;

void check(int rc, const std::filesystem::path& file, const char* what) {
  if (rc < 0) throw Error(ErrorKind::io, "encode " + file.string() + ": " + what + ": " + av::message(rc));
}

struct Shape {
  double x, y, vx, vy;  // pixels, pixels per second
  int w, h;
  bool disc;
  uint8_t y_, u, v;
  const char* colour;
};

struct Colour {
  const char* name;
  uint8_t y, u, v;
};
constexpr Colour kColours[] = {{"red", 81, 90, 240},     {"green", 145, 54, 34},   {"blue", 41, 240, 110},
                               {"yellow", 210, 16, 146}, {"white", 235, 128, 128}, {"magenta", 106, 202, 222}};

// The picture: a scrolling texture whose tint drifts, and shapes that bounce.
class Scene {
 public:
  Scene(int width, int height, uint64_t seed) : w_(width), h_(height), rng_(seed) {
    texture_.resize(static_cast<size_t>(2 * w_) * 2 * h_);
    std::uniform_real_distribution<double> freq(0.01, 0.06);
    double fx = freq(rng_), fy = freq(rng_);
    for (int y = 0; y < 2 * h_; ++y) {
      for (int x = 0; x < 2 * w_; ++x) {
        double t = 60 * std::sin(x * fx) * std::cos(y * fy) + 20 * std::sin((x + y) * 0.2);
        texture_[static_cast<size_t>(y) * 2 * w_ + x] = static_cast<uint8_t>(std::clamp(110.0 + t, 16.0, 235.0));
      }
    }
    std::uniform_real_distribution<double> unit(0, 1);
    int count = 2 + static_cast<int>(rng_() % 3);
    for (int i = 0; i < count; ++i) {
      const Colour& c = kColours[rng_() % std::size(kColours)];
      int side = std::max(4, static_cast<int>(std::min(w_, h_) * (0.12 + 0.15 * unit(rng_))));
      double speed = std::min(w_, h_) * (0.2 + 0.6 * unit(rng_));
      double angle = 2 * M_PI * unit(rng_);
      shapes_.push_back({unit(rng_) * (w_ - side), unit(rng_) * (h_ - side), speed * std::cos(angle),
                         speed * std::sin(angle), side, side, rng_() % 2 == 0, c.y, c.u, c.v, c.name});
    }
    pan_ = {w_ * (0.05 + 0.1 * unit(rng_)), h_ * (0.05 + 0.1 * unit(rng_))};
    tint_phase_ = 2 * M_PI * unit(rng_);
  }

  std::string caption() const {
    std::string s = "The camera pans slowly over a textured background while";
    for (size_t i = 0; i < shapes_.size(); ++i) {
      const auto& sh = shapes_[i];
      s += i == 0 ? " a " : (i + 1 == shapes_.size() ? " and a " : ", a ");
      s += sh.colour;
      s += sh.disc ? " disc" : " square";
      s += std::abs(sh.vx) > std::abs(sh.vy) ? (sh.vx > 0 ? " moves right" : " moves left")
                                             : (sh.vy > 0 ? " moves down" : " moves up");
    }
    return s + ", bouncing off the edges.";
  }

  void render(AVFrame* f, double t) {
    int ox = static_cast<int>(std::fmod(pan_.first * t, w_));
    int oy = static_cast<int>(std::fmod(pan_.second * t, h_));
    for (int y = 0; y < h_; ++y) {
      std::memcpy(f->data[0] + static_cast<size_t>(y) * f->linesize[0],
                  texture_.data() + static_cast<size_t>(y + oy) * 2 * w_ + ox, static_cast<size_t>(w_));
    }
    auto u = static_cast<uint8_t>(128 + 40 * std::sin(0.3 * t + tint_phase_));
    auto v = static_cast<uint8_t>(128 + 40 * std::cos(0.2 * t + tint_phase_));
    for (int y = 0; y < h_ / 2; ++y) {
      std::memset(f->data[1] + static_cast<size_t>(y) * f->linesize[1], u, static_cast<size_t>(w_ / 2));
      std::memset(f->data[2] + static_cast<size_t>(y) * f->linesize[2], v, static_cast<size_t>(w_ / 2));
    }
    for (const auto& s : shapes_) draw(f, s, t);
  }

 private:
  // Position at time t, reflecting off the edges.
  double bounce(double start, double velocity, double t, double span) const {
    if (span <= 0) return 0;
    double p = std::fmod(start + velocity * t, 2 * span);
    if (p < 0) p += 2 * span;
    return p > span ? 2 * span - p : p;
  }

  void draw(AVFrame* f, const Shape& s, double t) const {
    int x0 = static_cast<int>(bounce(s.x, s.vx, t, w_ - s.w));
    int y0 = static_cast<int>(bounce(s.y, s.vy, t, h_ - s.h));
    double r = s.w / 2.0;
    for (int y = 0; y < s.h; ++y) {
      for (int x = 0; x < s.w; ++x) {
        if (s.disc && (x - r) * (x - r) + (y - r) * (y - r) > r * r) continue;
        int px = x0 + x, py = y0 + y;
        f->data[0][static_cast<size_t>(py) * f->linesize[0] + px] = s.y_;
        f->data[1][static_cast<size_t>(py / 2) * f->linesize[1] + px / 2] = s.u;
        f->data[2][static_cast<size_t>(py / 2) * f->linesize[2] + px / 2] = s.v;
      }
    }
  }

  int w_, h_;
  std::mt19937_64 rng_;
  std::vector<uint8_t> texture_;
  std::vector<Shape> shapes_;
  std::pair<double, double> pan_;
  double tint_phase_ = 0;
};

const AVCodec* pick_encoder(const std::string& wanted) {
  if (!wanted.empty()) return avcodec_find_encoder_by_name(wanted.c_str());
  if (const AVCodec* x264 = avcodec_find_encoder_by_name("libx264")) return x264;
  return avcodec_find_encoder(AV_CODEC_ID_MPEG4);
}

class ClipEncoder {
 public:
  ClipEncoder(const std::filesystem::path& out, const ClipSpec& spec) : out_(out) {
    const AVCodec* codec = pick_encoder(spec.encoder);
    if (!codec) throw Error(ErrorKind::usage, "encode " + out.string() + ": no encoder " + spec.encoder);
    name_ = codec->name;
    AVFormatContext* raw = nullptr;
    check(avformat_alloc_output_context2(&raw, nullptr, "mp4", out.c_str()), out, "output context");
    fmt_.reset(raw);
    stream_ = avformat_new_stream(fmt_.get(), nullptr);
    if (!stream_) throw Error(ErrorKind::internal, "encode " + out.string() + ": avformat_new_stream failed");
    ctx_.reset(avcodec_alloc_context3(codec));
    if (!ctx_) throw Error(ErrorKind::internal, "encode " + out.string() + ": avcodec_alloc_context3 failed");
    AVRational rate = av_d2q(spec.fps, 1001 * 1000);
    ctx_->width = spec.width;
    ctx_->height = spec.height;
    ctx_->pix_fmt = AV_PIX_FMT_YUV420P;
    ctx_->time_base = av_inv_q(rate);
    ctx_->framerate = rate;
    ctx_->gop_size = static_cast<int>(spec.fps * 2);
    ctx_->thread_count = 1;  // deterministic output
    if (fmt_->oformat->flags & AVFMT_GLOBALHEADER) ctx_->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (name_ == "libx264") {
      // superfast keeps B-frames (like real uploads) and writes bytes quickly.
      av_opt_set(ctx_->priv_data, "preset", "superfast", 0);
      av_opt_set(ctx_->priv_data, "crf", "22", 0);
    } else {
      ctx_->bit_rate = static_cast<int64_t>(spec.width) * spec.height * 2;
    }
    check(avcodec_open2(ctx_.get(), codec, nullptr), out, "open encoder");
    check(avcodec_parameters_from_context(stream_->codecpar, ctx_.get()), out, "stream parameters");
    stream_->time_base = ctx_->time_base;
    check(avio_open(&fmt_->pb, out.c_str(), AVIO_FLAG_WRITE), out, "open file");
    check(avformat_write_header(fmt_.get(), nullptr), out, "write header");
    frame_.reset(av_frame_alloc());
    packet_.reset(av_packet_alloc());
    if (!frame_ || !packet_) throw Error(ErrorKind::internal, "encode " + out.string() + ": out of memory");
    frame_->format = AV_PIX_FMT_YUV420P;
    frame_->width = spec.width;
    frame_->height = spec.height;
    check(av_frame_get_buffer(frame_.get(), 0), out, "frame buffer");
  }

  AVFrame* next_frame() {
    check(av_frame_make_writable(frame_.get()), out_, "frame writable");
    return frame_.get();
  }

  void send(int64_t pts) {
    frame_->pts = pts;
    check(avcodec_send_frame(ctx_.get(), frame_.get()), out_, "encode frame");
    drain();
  }

  void close() {
    check(avcodec_send_frame(ctx_.get(), nullptr), out_, "flush");
    drain();
    check(av_write_trailer(fmt_.get()), out_, "write trailer");
    check(avio_closep(&fmt_->pb), out_, "close file");
  }

  const std::string& encoder() const { return name_; }

 private:
  void drain() {
    while (true) {
      int rc = avcodec_receive_packet(ctx_.get(), packet_.get());
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
      check(rc, out_, "receive packet");
      av_packet_rescale_ts(packet_.get(), ctx_->time_base, stream_->time_base);
      packet_->stream_index = stream_->index;
      check(av_interleaved_write_frame(fmt_.get(), packet_.get()), out_, "write packet");
    }
  }

  std::filesystem::path out_;
  std::string name_;
  av::OutputPtr fmt_;
  AVStream* stream_ = nullptr;
  av::CodecPtr ctx_;
  av::FramePtr frame_;
  av::PacketPtr packet_;
};

// A dataset archive being written: tar.gz or zip (members stored, like the real ones).
class ArchiveOut {
 public:
  ArchiveOut(const std::filesystem::path& path, Layout layout) : path_(path), a_(archive_write_new()) {
    if (!a_) throw Error(ErrorKind::internal, "archive_write_new failed");
    if (layout == Layout::llava) {
      archive_write_set_format_pax_restricted(a_.get());
      archive_write_add_filter_gzip(a_.get());
      archive_write_set_filter_option(a_.get(), "gzip", "timestamp", nullptr);  // reproducible bytes
    } else {
      archive_write_set_format_zip(a_.get());
      archive_write_zip_set_compression_store(a_.get());
    }
    std::filesystem::create_directories(path.parent_path());
    if (archive_write_open_filename(a_.get(), path.c_str()) != ARCHIVE_OK) fail("open");
  }

  void add_file(const std::string& member, const std::filesystem::path& file) {
    la::EntryPtr e(archive_entry_new());
    archive_entry_set_pathname(e.get(), member.c_str());
    archive_entry_set_filetype(e.get(), AE_IFREG);
    archive_entry_set_perm(e.get(), 0644);
    archive_entry_set_mtime(e.get(), 1'700'000'000, 0);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(std::filesystem::file_size(file)));
    if (archive_write_header(a_.get(), e.get()) != ARCHIVE_OK) fail("header of " + member);
    std::ifstream in(file, std::ios::binary);
    std::vector<char> buf(1 << 16);
    while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
      if (archive_write_data(a_.get(), buf.data(), static_cast<size_t>(in.gcount())) < 0) fail("data of " + member);
    }
  }

  void close() {
    if (archive_write_close(a_.get()) != ARCHIVE_OK) fail("close");
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    const char* msg = archive_error_string(a_.get());
    throw Error(ErrorKind::io, "archive " + path_.string() + ": " + what + ": " + (msg ? msg : "error"));
  }

  std::filesystem::path path_;
  la::WritePtr a_;
};

std::string hex_id(std::mt19937_64& rng, int chars) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < chars; ++i) s += digits[rng() % 16];
  return s;
}

std::string uuid(std::mt19937_64& rng) {
  return hex_id(rng, 8) + "-" + hex_id(rng, 4) + "-" + hex_id(rng, 4) + "-" + hex_id(rng, 4) + "-" + hex_id(rng, 12);
}

constexpr const char* kSubset = "0_30_s_academic_v0_1";
constexpr const char* kCamera = "camera_front_wide_120fov";
constexpr const char* kSources[] = {"academic_source/Charades", "academic_source/NextQA", "academic_source/ego4d"};

}  // namespace

EncodedClip encode_clip(const std::filesystem::path& out, const ClipSpec& spec) {
  if (spec.width < 16 || spec.height < 16 || spec.width % 2 || spec.height % 2 || !(spec.fps > 0) ||
      !(spec.seconds > 0)) {
    throw Error(ErrorKind::usage,
                "encode " + out.string() + ": width and height must be even and >= 16, fps and seconds positive");
  }
  Scene scene(spec.width, spec.height, spec.seed);
  ClipEncoder enc(out, spec);
  auto frames = static_cast<int64_t>(std::llround(spec.seconds * spec.fps));
  for (int64_t i = 0; i < frames; ++i) {
    scene.render(enc.next_frame(), static_cast<double>(i) / spec.fps);
    enc.send(i);
  }
  enc.close();
  return {enc.encoder(), scene.caption(), frames};
}

namespace {

// Clips are encoded a batch at a time on up to kBatch threads; the batch size
// is fixed so the dataset does not depend on the machine's core count.
constexpr int kBatch = 8;

struct PlannedClip {
  ClipSpec spec;
  std::string member;
  std::filesystem::path tmp;
  EncodedClip encoded;
};

void encode_batch(std::vector<PlannedClip>& batch) {
  std::vector<std::exception_ptr> errors(batch.size());
  {
    std::atomic<size_t> next{0};  // declared first: the threads join (and stop using it) before it goes
    std::vector<std::jthread> threads;
    unsigned width = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(), kBatch));
    for (unsigned t = 0; t < width; ++t) {
      threads.emplace_back([&] {
        for (size_t i = next++; i < batch.size(); i = next++) {
          try {
            batch[i].encoded = encode_clip(batch[i].tmp, batch[i].spec);
          } catch (...) {
            errors[i] = std::current_exception();
          }
        }
      });
    }
  }
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

std::filesystem::path archive_name(Layout layout, int archive_no) {
  if (layout == Layout::llava) {
    return std::filesystem::path(kSubset) /
           (std::string(kSubset) + "_videos_" + std::to_string(archive_no + 1) + ".tar.gz");
  }
  return std::filesystem::path("camera") / kCamera / fmt::format("{}.chunk_{:04d}.zip", kCamera, archive_no);
}

nlohmann::json caption_record(const std::string& member, const std::string& caption) {
  return {{"id", member},
          {"video", member},
          {"conversations",
           {{{"from", "human"}, {"value", "<image>\nDescribe what happens in the video."}},
            {{"from", "gpt"}, {"value", caption}}}},
          {"data_source", kSubset}};
}

}  // namespace

DatasetSummary write_dataset(const DatasetSpec& spec, const DatasetProgress& progress) {
  DatasetSummary summary;
  std::mt19937_64 rng(spec.seed);
  nlohmann::json captions = nlohmann::json::array();
  std::filesystem::create_directories(spec.out);
  auto done = [&] { return spec.target_bytes > 0 ? summary.bytes >= spec.target_bytes : summary.clips >= spec.clips; };
  std::optional<ArchiveOut> out;
  int in_archive = 0;
  auto close_archive = [&] {
    if (!out) return;
    out->close();
    out.reset();
    summary.archives.push_back(archive_name(spec.layout, static_cast<int>(summary.archives.size())));
  };
  while (!done()) {
    int count = spec.target_bytes > 0 ? kBatch : std::min(kBatch, spec.clips - summary.clips);
    std::vector<PlannedClip> batch(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {  // draws in the same order whatever the thread count
      auto& c = batch[static_cast<size_t>(i)];
      c.spec = spec.clip;
      c.spec.seed = rng();
      c.member = spec.layout == Layout::llava
                     ? std::string(kSources[rng() % std::size(kSources)]) + "/" + hex_id(rng, 10) + ".mp4"
                     : uuid(rng) + "." + kCamera + ".mp4";
      c.tmp = spec.out / (".kaio-mkdata-clip" + std::to_string(i) + ".mp4");
    }
    encode_batch(batch);
    for (auto& c : batch) {
      if (!done()) {
        if (!out || in_archive == spec.clips_per_archive) {
          close_archive();
          out.emplace(spec.out / archive_name(spec.layout, static_cast<int>(summary.archives.size())), spec.layout);
          in_archive = 0;
        }
        out->add_file(c.member, c.tmp);
        if (spec.layout == Layout::llava) captions.push_back(caption_record(c.member, c.encoded.caption));
        summary.bytes += std::filesystem::file_size(c.tmp);
        summary.encoder = c.encoded.encoder;
        ++summary.clips;
        ++in_archive;
      }
      std::filesystem::remove(c.tmp);
    }
    if (progress) progress(summary);
  }
  close_archive();
  if (spec.layout == Layout::llava) {
    summary.captions = std::filesystem::path(kSubset) / (std::string(kSubset) + "_cap_processed.json");
    auto path = spec.out / summary.captions;
    std::ofstream file(path);
    file << captions.dump(1) << "\n";
    if (!file.flush()) throw Error(ErrorKind::io, "write " + path.string() + " failed");
  }
  spdlog::info("kaio-mkdata: {} clips in {} archives, {} bytes of video, encoder {}", summary.clips,
               summary.archives.size(), summary.bytes, summary.encoder);
  return summary;
}

}  // namespace kaio::mkdata
