#include "decode/video.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <set>
#include <vector>

extern "C" {
#include <libavutil/display.h>
#include <libavutil/pixdesc.h>
}

#include "common/error.h"
#include "common/log.h"
#include "decode/av_util.h"
#include "decode/shard.h"

namespace kaio::decode {
namespace {

struct VideoStream {
  int index = -1;
  AVStream* stream = nullptr;
  const AVCodec* codec = nullptr;
};

VideoStream find_video(AVFormatContext* fmt, const std::string& what) {
  VideoStream v;
  v.index = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &v.codec, 0);
  if (v.index == AVERROR_STREAM_NOT_FOUND) throw Error(ErrorKind::corrupt, what + ": not a video (no video stream)");
  if (v.index < 0 || !v.codec) throw Error(ErrorKind::corrupt, what + ": unsupported codec: " + av::message(v.index));
  v.stream = fmt->streams[v.index];
  const auto* par = v.stream->codecpar;
  if (par->width <= 0 || par->height <= 0) throw Error(ErrorKind::corrupt, what + ": video stream has no size");
  av::check_resolution(par->width, par->height, what);
  return v;
}

// Degrees clockwise that make the picture upright (what ffmpeg's autorotate does).
int rotation_of(const AVStream* s) {
  const auto* matrix = reinterpret_cast<const int32_t*>(av_stream_get_side_data(s, AV_PKT_DATA_DISPLAYMATRIX, nullptr));
  if (!matrix) return 0;
  double ccw = av_display_rotation_get(matrix);
  if (std::isnan(ccw)) return 0;
  int cw = static_cast<int>(std::lround(-ccw / 90.0)) * 90 % 360;
  return cw < 0 ? cw + 360 : cw;
}

double stream_duration(const AVFormatContext* fmt, const AVStream* s) {
  if (s->duration != AV_NOPTS_VALUE && s->duration > 0) return static_cast<double>(s->duration) * av_q2d(s->time_base);
  if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0) return static_cast<double>(fmt->duration) / AV_TIME_BASE;
  return 0;
}

int64_t samples_before(double end_seconds, double fps) {
  if (end_seconds <= 0) return 0;
  return static_cast<int64_t>(std::ceil(end_seconds * fps - 1e-6));
}

void rotate_square(const uint8_t* in, uint8_t* out, int n, int degrees_cw) {
  for (int y = 0; y < n; ++y) {
    for (int x = 0; x < n; ++x) {
      int sy = y, sx = x;
      if (degrees_cw == 90) {
        sy = n - 1 - x;
        sx = y;
      } else if (degrees_cw == 180) {
        sy = n - 1 - y;
        sx = n - 1 - x;
      } else if (degrees_cw == 270) {
        sy = x;
        sx = n - 1 - y;
      }
      std::memcpy(out + (static_cast<size_t>(y) * n + x) * 3, in + (static_cast<size_t>(sy) * n + sx) * 3, 3);
    }
  }
}

// Turns decoded frames into size x size RGB: crop/pad/stretch, then rotation.
class FrameConverter {
 public:
  FrameConverter(const WindowSpec& spec, int rotation, std::string what)
      : spec_(spec), rotation_(rotation), what_(std::move(what)), work_(av::make_frame()) {}

  void convert(const AVFrame* frame, uint8_t* out) {
    const int n = spec_.size;
    if (av_frame_ref(work_.get(), frame) < 0) throw Error(ErrorKind::internal, what_ + ": av_frame_ref failed");
    int src_w = frame->width, src_h = frame->height;
    int dst_w = n, dst_h = n, dst_x = 0, dst_y = 0;
    if (spec_.resize == ResizeMode::crop) {
      int side = std::min(src_w, src_h);
      work_->crop_left = static_cast<size_t>((src_w - side) / 2);
      work_->crop_right = static_cast<size_t>(src_w - side) - work_->crop_left;
      work_->crop_top = static_cast<size_t>((src_h - side) / 2);
      work_->crop_bottom = static_cast<size_t>(src_h - side) - work_->crop_top;
      if (av_frame_apply_cropping(work_.get(), AV_FRAME_CROP_UNALIGNED) < 0) {
        throw Error(ErrorKind::corrupt, what_ + ": cannot crop frame");
      }
    } else if (spec_.resize == ResizeMode::pad) {
      if (src_w >= src_h) {
        dst_h = std::max(1, static_cast<int>(std::lround(static_cast<double>(n) * src_h / src_w)));
        dst_y = (n - dst_h) / 2;
      } else {
        dst_w = std::max(1, static_cast<int>(std::lround(static_cast<double>(n) * src_w / src_h)));
        dst_x = (n - dst_w) / 2;
      }
    }
    sws_.reset(sws_getCachedContext(sws_.release(), work_->width, work_->height,
                                    static_cast<AVPixelFormat>(work_->format), dst_w, dst_h, AV_PIX_FMT_RGB24,
                                    SWS_BILINEAR, nullptr, nullptr, nullptr));
    if (!sws_) {
      av_frame_unref(work_.get());
      throw Error(ErrorKind::corrupt,
                  what_ + ": unsupported pixel format " +
                      std::string(av_get_pix_fmt_name(static_cast<AVPixelFormat>(frame->format)) ?: "?"));
    }
    uint8_t* target = rotation_ ? scratch(n) : out;
    if (spec_.resize == ResizeMode::pad) std::memset(target, 0, static_cast<size_t>(n) * n * 3);
    uint8_t* dst[4] = {target + (static_cast<size_t>(dst_y) * n + dst_x) * 3, nullptr, nullptr, nullptr};
    int dst_stride[4] = {n * 3, 0, 0, 0};
    sws_scale(sws_.get(), work_->data, work_->linesize, 0, work_->height, dst, dst_stride);
    av_frame_unref(work_.get());
    if (rotation_) rotate_square(target, out, n, rotation_);
  }

 private:
  uint8_t* scratch(int n) {
    rotated_.resize(static_cast<size_t>(n) * n * 3);
    return rotated_.data();
  }

  WindowSpec spec_;
  int rotation_;
  std::string what_;
  av::FramePtr work_;
  av::SwsPtr sws_;
  std::vector<uint8_t> rotated_;
};

// Groups sampled frames into windows of T every S and hands them to the shard.
class WindowAssembler {
 public:
  WindowAssembler(const WindowSpec& spec, const ClipOrigin& origin, ShardWriter& shard)
      : spec_(spec), origin_(origin), shard_(shard), frame_bytes_(static_cast<size_t>(spec.size) * spec.size * 3) {}

  // A buffer for the next sampled frame, or nullptr when no window will use it.
  uint8_t* slot_for_next() {
    if (next_ < window_start()) return nullptr;
    std::vector<uint8_t> buf;
    if (!free_.empty()) {
      buf = std::move(free_.back());
      free_.pop_back();
    }
    buf.resize(frame_bytes_);
    held_.push_back({std::move(buf), 0});
    return held_.back().rgb.data();
  }

  // Records that sample `next_` (written to the slot, if any) shows time `t`.
  void commit(double t) {
    if (next_ >= window_start()) held_.back().time = t;
    ++next_;
    if (next_ == window_start() + spec_.frames) emit_window();
  }

  // Repeats the last sample until one window is complete (pad_short).
  void pad_to_one_window() {
    if (next_ == 0 || next_ >= spec_.frames) return;
    while (next_ < spec_.frames) {
      auto last = held_.back();
      held_.push_back(std::move(last));
      ++next_;
    }
    emit_window();
  }

  int64_t sampled() const { return next_; }

 private:
  struct Held {
    std::vector<uint8_t> rgb;
    double time;
  };

  int64_t window_start() const { return windows_ * spec_.stride; }

  void emit_window() {
    window_.resize(frame_bytes_ * spec_.frames);
    for (int i = 0; i < spec_.frames; ++i) {
      std::memcpy(window_.data() + frame_bytes_ * i, held_[static_cast<size_t>(i)].rgb.data(), frame_bytes_);
    }
    shard_.add_window(window_, WindowInfo{held_.front().time, origin_.source_file, origin_.member, origin_.caption});
    ++windows_;
    // Keep only the samples the next window starts from.
    int64_t drop = std::min<int64_t>(spec_.stride, static_cast<int64_t>(held_.size()));
    for (int64_t i = 0; i < drop; ++i) {
      free_.push_back(std::move(held_.front().rgb));
      held_.pop_front();
    }
  }

  const WindowSpec& spec_;
  const ClipOrigin& origin_;
  ShardWriter& shard_;
  size_t frame_bytes_;
  int64_t next_ = 0;     // index of the next sample
  int64_t windows_ = 0;  // windows emitted
  std::deque<Held> held_;
  std::vector<std::vector<uint8_t>> free_;
  std::vector<uint8_t> window_;
};

// Whether sample k (at k/fps) comes before time t: then a frame starting at t
// does not show it. The sampler and the packet plan share this one expression,
// so that both decide alike on the same timestamps.
bool sample_before(int64_t k, double fps, double t) {
  return static_cast<double>(k) / fps < t - 1e-9;
}

// Chooses, for each sample time k/fps, the last frame shown at or before it.
class Sampler {
 public:
  // `check(k, end)` runs before sample k is taken on the way to time `end` and
  // throws to end the clip (stop, decode.timeout, too many samples): one gap
  // in the timestamps can otherwise ask for any number of samples.
  using Check = std::function<void(int64_t k, double end)>;
  Sampler(const WindowSpec& spec, FrameConverter& converter, WindowAssembler& windows, Check check)
      : spec_(spec), converter_(converter), windows_(windows), check_(std::move(check)), prev_(av::make_frame()) {}

  void on_frame(AVFrame* frame, double t, double duration) {
    if (have_prev_ && t <= prev_time_) return;  // out-of-order or repeated timestamp
    if (have_prev_) emit_until(t);
    av_frame_unref(prev_.get());
    av_frame_move_ref(prev_.get(), frame);
    have_prev_ = true;
    prev_time_ = t;
    prev_duration_ = duration;
    ++prev_serial_;
  }

  void finish() {
    if (have_prev_) emit_until(prev_time_ + prev_duration_);
  }

  bool saw_frames() const { return have_prev_; }
  double end_time() const { return prev_time_ + prev_duration_; }

 private:
  void emit_until(double end) {
    while (sample_before(k_, spec_.fps, end)) {
      check_(k_, end);
      uint8_t* slot = windows_.slot_for_next();
      if (slot) {
        if (converted_serial_ != prev_serial_) {
          converted_.resize(static_cast<size_t>(spec_.size) * spec_.size * 3);
          converter_.convert(prev_.get(), converted_.data());
          converted_serial_ = prev_serial_;
        }
        std::memcpy(slot, converted_.data(), converted_.size());
      }
      windows_.commit(prev_time_);
      ++k_;
    }
  }

  const WindowSpec& spec_;
  FrameConverter& converter_;
  WindowAssembler& windows_;
  Check check_;
  av::FramePtr prev_;
  bool have_prev_ = false;
  double prev_time_ = 0, prev_duration_ = 0;
  int64_t prev_serial_ = 0, converted_serial_ = -1;
  int64_t k_ = 0;
  std::vector<uint8_t> converted_;
};

// Decides, packet by packet in decode order, what the decoder must see for
// the samples the windows use (never for the others: between windows when
// stride > frames). A frame is shown for sample k when its pts is the last at
// or before k/fps, so it is unneeded when no used k/fps falls between its pts
// and the next larger pts. That next pts is known once kLookahead more packets
// are read (B-frame reordering is far shallower). An unneeded packet is
//  - dropped (never sent) when only unneeded packets lie between it and a
//    closed keyframe (every packet before it shows before it, none of the
//    next kLookahead does): nothing from such a keyframe on refers to
//    anything before it, so the decoder goes on from it as if the dropped
//    packets had been decoded (no flush: draining and flushing before the
//    keyframe doubled the bench's system time, about what the drops saved);
//  - otherwise decoded only if something refers to it (AVDISCARD_NONREF).
// Every frame a sample shows thus decodes exactly as in a full decode. The end
// of a frame's span is decided exactly as the sampler decides it (a sample at
// the next pts is the next frame's); its start keeps a margin; a packet
// without pts is always needed.
class PacketPlan {
 public:
  enum class Fate { send, send_nonref, drop };

  PacketPlan(const WindowSpec& spec, double time_base, int64_t start) : spec_(spec), tb_(time_base), start_(start) {}

  void push(av::PacketPtr p) {
    if (p->pts != AV_NOPTS_VALUE) seen_.insert(p->pts);
    bytes_ += static_cast<size_t>(std::max(0, p->size));
    queue_.push_back(std::move(p));
  }

  // The oldest packet and its fate, or nullptr until more packets are read
  // (never at eof while packets remain).
  av::PacketPtr pop(bool eof, Fate& fate) {
    if (queue_.empty() || (!eof && queue_.size() <= kLookahead)) return nullptr;
    if (is_needed(0)) {
      fate = Fate::send;
    } else {
      auto drop = droppable(eof);
      if (drop == Decision::undecided) {
        if (queue_.size() < kMaxQueue && bytes_ < kMaxBytes) return nullptr;
        drop = Decision::no;
      }
      fate = drop == Decision::yes ? Fate::drop : Fate::send_nonref;
    }
    if (queue_.front().get() == drop_until_) drop_until_ = nullptr;
    av::PacketPtr p = std::move(queue_.front());
    queue_.pop_front();
    bytes_ -= static_cast<size_t>(std::max(0, p->size));
    int64_t oldest_pending = std::numeric_limits<int64_t>::max();
    for (const auto& q : queue_) {
      if (q->pts != AV_NOPTS_VALUE) oldest_pending = std::min(oldest_pending, q->pts);
    }
    while (!seen_.empty() && *seen_.begin() < oldest_pending && *seen_.begin() <= p->pts) seen_.erase(seen_.begin());
    return p;
  }

 private:
  enum class Decision { yes, no, undecided };
  static constexpr size_t kLookahead = 16;
  // How far ahead a drop may look for its keyframe (a long GOP waits no longer).
  static constexpr size_t kMaxQueue = 1024;
  static constexpr size_t kMaxBytes = size_t{64} << 20;
  static constexpr double kMargin = 1e-3;  // seconds before a frame's pts that may still be its samples

  // Whether queue_[i]'s frame shows in a used sample; needs kLookahead later packets or eof.
  bool is_needed(size_t i) const {
    int64_t pts = queue_[i]->pts;
    if (pts == AV_NOPTS_VALUE) return true;
    auto next = seen_.upper_bound(pts);
    if (next == seen_.end()) return true;
    double from = static_cast<double>(pts - start_) * tb_;
    double to = static_cast<double>(*next - start_) * tb_;
    auto k = static_cast<int64_t>(std::max(0.0, std::ceil((from - kMargin) * spec_.fps)));
    return sample_before(next_used(k), spec_.fps, to);
  }

  // The first sample at or after k that a window uses.
  int64_t next_used(int64_t k) const {
    if (spec_.stride <= spec_.frames) return k;
    int64_t into = k % spec_.stride;
    return into < spec_.frames ? k : k - into + spec_.stride;
  }

  // Whether the head packet lies, with only unneeded packets, before a closed keyframe.
  Decision droppable(bool eof) {
    if (drop_until_ && drop_until_ != queue_.front().get()) return Decision::yes;
    drop_until_ = nullptr;  // the keyframe itself is decided afresh
    const int64_t head_pts = queue_.front()->pts;
    for (size_t j = 1; j < queue_.size(); ++j) {
      if (!eof && j + kLookahead >= queue_.size()) return Decision::undecided;
      const AVPacket& p = *queue_[j];
      if (p.pts == AV_NOPTS_VALUE) return Decision::no;
      if ((p.flags & AV_PKT_FLAG_KEY) && head_pts < p.pts && closed(j)) {
        drop_until_ = queue_[j].get();
        return Decision::yes;
      }
      if (is_needed(j)) return Decision::no;
    }
    return Decision::no;  // eof before any keyframe
  }

  // Whether the keyframe queue_[key] starts afresh: every packet before it
  // shows before it, and none of the next kLookahead shows before it (leading
  // pictures of an open GOP refer to frames before the keyframe).
  bool closed(size_t key) const {
    const int64_t key_pts = queue_[key]->pts;
    for (size_t i = 0; i < key; ++i) {
      if (queue_[i]->pts == AV_NOPTS_VALUE || queue_[i]->pts >= key_pts) return false;
    }
    for (size_t i = key + 1; i < std::min(queue_.size(), key + 1 + kLookahead); ++i) {
      if (queue_[i]->pts == AV_NOPTS_VALUE || queue_[i]->pts < key_pts) return false;
    }
    return true;
  }

  const WindowSpec& spec_;
  double tb_;
  int64_t start_;
  std::deque<av::PacketPtr> queue_;
  size_t bytes_ = 0;
  std::set<int64_t> seen_;
  const AVPacket* drop_until_ = nullptr;  // the keyframe the packets before it are dropped for
};

av::CodecPtr open_decoder(const VideoStream& v, int threads, const std::string& what) {
  av::CodecPtr ctx(avcodec_alloc_context3(v.codec));
  if (!ctx) throw Error(ErrorKind::internal, what + ": avcodec_alloc_context3 failed");
  int rc = avcodec_parameters_to_context(ctx.get(), v.stream->codecpar);
  if (rc < 0) throw Error(ErrorKind::corrupt, what + ": bad codec parameters: " + av::message(rc));
  ctx->thread_count = threads;
  ctx->thread_type = FF_THREAD_FRAME | FF_THREAD_SLICE;
  ctx->pkt_timebase = v.stream->time_base;
  rc = avcodec_open2(ctx.get(), v.codec, nullptr);
  if (rc < 0) throw Error(ErrorKind::corrupt, what + ": cannot open " + v.codec->name + " decoder: " + av::message(rc));
  return ctx;
}

std::string describe(const std::filesystem::path& clip, const ClipOrigin& origin) {
  return "clip " + clip.string() + " (member " + printable(origin.member) + " of " + printable(origin.source_file) +
         ")";
}

}  // namespace

WindowSpec from_config(const kaio::DecodeConfig& c) {
  WindowSpec s;
  s.frames = c.frames;
  s.stride = c.stride;
  s.fps = c.fps;
  s.size = c.size;
  s.pad_short = c.pad_short;
  if (c.resize == "crop") {
    s.resize = ResizeMode::crop;
  } else if (c.resize == "pad") {
    s.resize = ResizeMode::pad;
  } else if (c.resize == "stretch") {
    s.resize = ResizeMode::stretch;
  } else {
    throw Error(ErrorKind::config, "decode.resize: unknown mode \"" + c.resize + "\" (crop, pad or stretch)");
  }
  if (s.frames < 1 || s.stride < 1 || s.size < 8 || !(s.fps > 0)) {
    throw Error(ErrorKind::config, "decode.frames, decode.stride, decode.size and decode.fps must be positive");
  }
  return s;
}

int64_t max_samples_for(uint64_t file_bytes, const WindowSpec& spec) {
  return static_cast<int64_t>(file_bytes / kMinBytesPerSample) + spec.frames;
}

int window_count(const WindowSpec& spec, int64_t sampled) {
  if (sampled <= 0) return 0;
  if (sampled < spec.frames) return spec.pad_short ? 1 : 0;
  return static_cast<int>((sampled - spec.frames) / spec.stride + 1);
}

ClipProbe probe_clip(const std::filesystem::path& clip, const WindowSpec& spec) {
  av::Interrupt interrupt;
  interrupt.deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::string what = "clip " + clip.string();
  auto fmt = av::open_input(clip, &interrupt, what);
  auto v = find_video(fmt.get(), what);
  ClipProbe p;
  p.duration = stream_duration(fmt.get(), v.stream);
  AVRational rate = av_guess_frame_rate(fmt.get(), v.stream, nullptr);
  p.fps = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0;
  p.width = v.stream->codecpar->width;
  p.height = v.stream->codecpar->height;
  p.rotation = rotation_of(v.stream);
  p.codec = v.codec->name;
  p.sampled_frames = samples_before(p.duration, spec.fps);
  p.expected_windows = window_count(spec, p.sampled_frames);
  p.shard_bytes = shard_bytes(spec, p.expected_windows + 1, 0);
  return p;
}

ShardSummary decode_clip(const std::filesystem::path& clip, const ClipOrigin& origin, const WindowSpec& spec,
                         const std::filesystem::path& shard_out, const DecodeOptions& opts) {
  const std::string what = describe(clip, origin);
  av::Interrupt interrupt;
  interrupt.deadline = std::chrono::steady_clock::now() + opts.timeout;
  interrupt.stop = opts.stop;
  auto check_bounds = [&] {
    if (interrupt.stop.stop_requested()) throw Error(ErrorKind::cancelled, what + ": decode cancelled");
    if (interrupt.expired()) {
      throw Error(ErrorKind::corrupt, what + ": decode took longer than " +
                                          std::to_string(opts.timeout.count() / 1000) + "s (decode.timeout)");
    }
  };

  av::FormatPtr fmt;
  try {
    fmt = av::open_input(clip, &interrupt, what);
  } catch (const Error&) {
    check_bounds();  // an interrupted open says why: stop or timeout
    throw;
  }
  auto v = find_video(fmt.get(), what);
  auto codec = open_decoder(v, opts.codec_threads, what);
  const double tb = av_q2d(v.stream->time_base);
  AVRational rate = av_guess_frame_rate(fmt.get(), v.stream, nullptr);
  const double nominal_duration = rate.num > 0 && rate.den > 0 ? av_q2d(av_inv_q(rate)) : 1.0 / 30;
  const int64_t start = v.stream->start_time != AV_NOPTS_VALUE ? v.stream->start_time : 0;

  std::error_code size_error;
  const uint64_t file_bytes = std::filesystem::file_size(clip, size_error);
  const int64_t max_samples = opts.max_samples > 0 ? opts.max_samples : max_samples_for(file_bytes, spec);
  auto check_sample = [&](int64_t k, double end) {
    check_bounds();
    if (k < max_samples) return;
    throw Error(ErrorKind::rejected, what + ": frames run to " + std::to_string(end) + " s, more than the " +
                                         std::to_string(max_samples) + " samples at " + std::to_string(spec.fps) +
                                         " fps a file of " + std::to_string(file_bytes) + " bytes may give (one per " +
                                         std::to_string(kMinBytesPerSample) +
                                         " bytes): a gap in its timestamps or a hostile stream");
  };

  ShardWriter shard(shard_out, spec, opts.shard_space);
  FrameConverter converter(spec, rotation_of(v.stream), what);
  WindowAssembler windows(spec, origin, shard);
  Sampler sampler(spec, converter, windows, check_sample);

  auto packet = av::make_packet();
  auto frame = av::make_frame();
  double last_time = -1;
  std::string last_error;
  ShardSummary summary;
  auto drain = [&] {
    while (true) {
      int rc = avcodec_receive_frame(codec.get(), frame.get());
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
      if (rc < 0) {  // one damaged frame: note it and go on, like ffmpeg does
        last_error = av::message(rc);
        return;
      }
      ++summary.decoded_frames;
      int64_t ts = frame->best_effort_timestamp;
      double t = ts != AV_NOPTS_VALUE ? static_cast<double>(ts - start) * tb : last_time + nominal_duration;
      double dur = frame->pkt_duration > 0 ? static_cast<double>(frame->pkt_duration) * tb : nominal_duration;
      last_time = t;
      sampler.on_frame(frame.get(), t, dur);
      av_frame_unref(frame.get());
    }
  };

  auto send = [&](AVPacket* p) {
    int rc = avcodec_send_packet(codec.get(), p);
    if (rc < 0 && rc != AVERROR(EAGAIN) && rc != AVERROR_EOF) {
      last_error = av::message(rc);  // a damaged packet: keep going like ffmpeg does
      spdlog::debug("{}: packet rejected by decoder: {}", what, last_error);
    }
    drain();
  };
  PacketPlan plan(spec, tb, start);
  bool eof = false;
  while (!eof) {
    check_bounds();
    int rc = av_read_frame(fmt.get(), packet.get());
    if (rc == AVERROR_EOF) {
      eof = true;
    } else if (rc < 0) {
      check_bounds();
      throw Error(ErrorKind::corrupt, what + ": read failed (truncated or corrupt): " + av::message(rc));
    } else if (packet->stream_index != v.index) {
      av_packet_unref(packet.get());
      continue;
    } else if (opts.decode_every_frame) {
      send(packet.get());
      av_packet_unref(packet.get());
      continue;
    } else {
      plan.push(std::exchange(packet, av::make_packet()));
    }
    auto fate = PacketPlan::Fate::send;
    while (auto next = plan.pop(eof, fate)) {
      if (fate == PacketPlan::Fate::drop) {
        ++summary.packets_dropped;
        continue;
      }
      codec->skip_frame = fate == PacketPlan::Fate::send ? AVDISCARD_DEFAULT : AVDISCARD_NONREF;
      send(next.get());
    }
  }
  codec->skip_frame = AVDISCARD_DEFAULT;
  send(nullptr);
  sampler.finish();
  if (!sampler.saw_frames()) {
    throw Error(ErrorKind::corrupt,
                what + ": zero frames decoded" + (last_error.empty() ? std::string() : ": " + last_error));
  }
  // A file cut short inside its media data (moov at the front) reads to a
  // quiet EOF; the container's duration tells.
  const double claimed = stream_duration(fmt.get(), v.stream);
  if (claimed > 0 && sampler.end_time() < claimed - std::max(1.0, 0.1 * claimed)) {
    throw Error(ErrorKind::corrupt, what + ": truncated: frames end at " + std::to_string(sampler.end_time()) +
                                        " s of " + std::to_string(claimed) + " s" +
                                        (last_error.empty() ? std::string() : " (" + last_error + ")"));
  }
  if (spec.pad_short) windows.pad_to_one_window();

  summary.sampled_frames = windows.sampled();
  summary.windows = shard.windows();
  if (summary.windows == 0) {
    summary.skipped_reason = "only " + std::to_string(summary.sampled_frames) + " frames at " +
                             std::to_string(spec.fps) + " fps, fewer than a window of " + std::to_string(spec.frames) +
                             " (decode.pad_short is off)";
    spdlog::debug("{}: skipped: {}", what, summary.skipped_reason);  // the caller says it as the clip's failure
    return summary;  // the writer's destructor removes the temporary file
  }
  summary.bytes = shard.finish();
  // Per clip, so debug: info is one line per file ("decoded FILE").
  spdlog::debug("{}: {} windows, {} bytes in {}", what, summary.windows, summary.bytes, shard_out.string());
  return summary;
}

}  // namespace kaio::decode
