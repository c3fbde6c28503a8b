#pragma once
// Owners and helpers for FFmpeg objects, shared by the decoder, the probe
// command, the PNG writer and kaio-mkdata's encoder. Internal to kaio (tools
// may use it; nothing outside decode/ and tools/ should need to).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stop_token>
#include <string>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>
#include <libswscale/swscale.h>
}

namespace kaio::decode::av {

struct FormatCloser {
  void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
// An output (muxer) context: closes its file when open, then frees it.
struct OutputCloser {
  void operator()(AVFormatContext* c) const {
    if (c->pb) avio_closep(&c->pb);
    avformat_free_context(c);
  }
};
struct CodecFreer {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameFreer {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketFreer {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsFreer {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};

using FormatPtr = std::unique_ptr<AVFormatContext, FormatCloser>;
using OutputPtr = std::unique_ptr<AVFormatContext, OutputCloser>;
using CodecPtr = std::unique_ptr<AVCodecContext, CodecFreer>;
using FramePtr = std::unique_ptr<AVFrame, FrameFreer>;
using PacketPtr = std::unique_ptr<AVPacket, PacketFreer>;
using SwsPtr = std::unique_ptr<SwsContext, SwsFreer>;

FramePtr make_frame();
PacketPtr make_packet();

// FFmpeg's message for an error code.
std::string message(int code);

// What AVIOInterruptCB checks: a deadline and a stop request. Lives as long as
// the format context that points at it.
struct Interrupt {
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  std::stop_token stop;
  bool expired() const { return std::chrono::steady_clock::now() > deadline; }
  bool should_stop() const { return stop.stop_requested() || expired(); }
};

// Claimed sizes above these are refused before any decoder allocates for them.
inline constexpr int kMaxSide = 16384;
inline constexpr int64_t kMaxPixels = int64_t{8192} * 8192;
// Throws Error(rejected) naming `what` when the size is over the limits.
void check_resolution(int width, int height, const std::string& what);

// Opens a container with `interrupt` bounding every blocking call, checks the
// claimed video sizes, and reads its stream info. Throws Error(corrupt) naming
// `what` with FFmpeg's message, Error(rejected) for a huge claimed size.
FormatPtr open_input(const std::filesystem::path& file, Interrupt* interrupt, const std::string& what);

}  // namespace kaio::decode::av
