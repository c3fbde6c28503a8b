#include "decode/png.h"

#include <cstring>
#include <string_view>

#include "common/error.h"
#include "common/fs.h"
#include "decode/av_util.h"

namespace kaio::decode {

void write_png(const std::filesystem::path& file, const uint8_t* rgb, int width, int height) {
  const std::string what = "png " + file.string();
  const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
  if (!codec) throw Error(ErrorKind::internal, what + ": FFmpeg has no png encoder");
  av::CodecPtr ctx(avcodec_alloc_context3(codec));
  if (!ctx) throw Error(ErrorKind::internal, what + ": avcodec_alloc_context3 failed");
  ctx->width = width;
  ctx->height = height;
  ctx->pix_fmt = AV_PIX_FMT_RGB24;
  ctx->time_base = AVRational{1, 1};
  int rc = avcodec_open2(ctx.get(), codec, nullptr);
  if (rc < 0) throw Error(ErrorKind::internal, what + ": cannot open png encoder: " + av::message(rc));
  auto frame = av::make_frame();
  frame->width = width;
  frame->height = height;
  frame->format = AV_PIX_FMT_RGB24;
  rc = av_frame_get_buffer(frame.get(), 0);
  if (rc < 0) throw Error(ErrorKind::internal, what + ": frame buffer: " + av::message(rc));
  for (int y = 0; y < height; ++y) {
    std::memcpy(frame->data[0] + static_cast<size_t>(y) * frame->linesize[0], rgb + static_cast<size_t>(y) * width * 3,
                static_cast<size_t>(width) * 3);
  }
  frame->pts = 0;
  rc = avcodec_send_frame(ctx.get(), frame.get());
  if (rc >= 0) rc = avcodec_send_frame(ctx.get(), nullptr);
  if (rc < 0) throw Error(ErrorKind::internal, what + ": encode: " + av::message(rc));
  auto packet = av::make_packet();
  rc = avcodec_receive_packet(ctx.get(), packet.get());
  if (rc < 0) throw Error(ErrorKind::internal, what + ": encode: " + av::message(rc));
  write_file_durably(file,
                     std::string_view(reinterpret_cast<const char*>(packet->data), static_cast<size_t>(packet->size)));
}

}  // namespace kaio::decode
