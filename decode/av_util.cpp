#include "decode/av_util.h"

#include "common/error.h"

namespace kaio::decode::av {
namespace {

int interrupt_callback(void* opaque) { return static_cast<const Interrupt*>(opaque)->should_stop() ? 1 : 0; }

}  // namespace

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
  rc = avformat_find_stream_info(fmt.get(), nullptr);
  if (rc < 0) throw Error(ErrorKind::corrupt, what + ": cannot read stream info: " + message(rc));
  return fmt;
}

}  // namespace kaio::decode::av
