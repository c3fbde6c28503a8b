#include "decode/av_util.h"

#include "common/error.h"

namespace kaio::decode::av {
namespace {

int interrupt_callback(void* opaque) {
  return static_cast<const Interrupt*>(opaque)->should_stop() ? 1 : 0;
}

}  // namespace

void check_resolution(int width, int height, const std::string& what) {
  if (width > kMaxSide || height > kMaxSide || int64_t{width} * height > kMaxPixels) {
    throw Error(ErrorKind::rejected, what + ": claimed resolution " + std::to_string(width) + "x" +
                                         std::to_string(height) + " is over the limit");
  }
}

FramePtr make_frame() {
  FramePtr f(av_frame_alloc());
  if (!f) throw Error(ErrorKind::internal, "av_frame_alloc: out of memory");
  return f;
}

PacketPtr make_packet() {
  PacketPtr p(av_packet_alloc());
  if (!p) throw Error(ErrorKind::internal, "av_packet_alloc: out of memory");
  return p;
}

std::string message(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, buf, sizeof buf);
  return buf;
}

FormatPtr open_input(const std::filesystem::path& file, Interrupt* interrupt, const std::string& what) {
  AVFormatContext* raw = avformat_alloc_context();
  if (!raw) throw Error(ErrorKind::internal, "avformat_alloc_context: out of memory");
  raw->interrupt_callback.callback = interrupt_callback;
  raw->interrupt_callback.opaque = interrupt;
  int rc = avformat_open_input(&raw, file.c_str(), nullptr, nullptr);  // frees raw on failure
  if (rc < 0) throw Error(ErrorKind::corrupt, what + ": cannot open as video: " + message(rc));
  FormatPtr fmt(raw);
  // Refuse absurd sizes from the container header before any decoder runs
  // (avformat_find_stream_info decodes frames, allocating for the claimed size).
  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    const auto* par = fmt->streams[i]->codecpar;
    if (par->codec_type == AVMEDIA_TYPE_VIDEO) check_resolution(par->width, par->height, what);
  }
  rc = avformat_find_stream_info(fmt.get(), nullptr);
  if (rc < 0) throw Error(ErrorKind::corrupt, what + ": cannot read stream info: " + message(rc));
  return fmt;
}

}  // namespace kaio::decode::av
