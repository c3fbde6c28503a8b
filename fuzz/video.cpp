// The video decode entry point: probe_clip and decode_clip on a file holding
// the input (FFmpeg reads files; the pipeline hands it extracted members).
// Properties: only kaio::Error escapes; a shard written holds the windows said.
#include "decode/video.h"

#include <cstdint>
#include <fstream>

#include "common/error.h"
#include "decode/shard.h"
#include "fuzz/fuzz_util.h"

using namespace kaio;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::quiet();
  const auto clip = fuzz::scratch_dir() / "clip.mp4";
  const auto shard = fuzz::scratch_dir() / "clip.shard";
  {
    std::ofstream out(clip, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  decode::WindowSpec spec;
  spec.frames = 2;
  spec.stride = 2;
  spec.fps = 4;
  spec.size = 16;
  spec.resize = static_cast<decode::ResizeMode>(size % 3);
  spec.pad_short = size % 2 == 0;
  try {
    (void)decode::probe_clip(clip, spec);
  } catch (const Error&) {
  }
  try {
    decode::DecodeOptions opts;
    opts.timeout = std::chrono::seconds(5);
    auto summary = decode::decode_clip(clip, {"fuzz.tar", "clip.mp4", ""}, spec, shard, opts);
    if (summary.windows > 0) {
      decode::ShardReader reader(shard);
      KAIO_FUZZ_CHECK(reader.windows() == summary.windows, "the shard holds the windows reported");
    }
  } catch (const Error&) {
  }
  std::error_code ec;
  std::filesystem::remove(shard, ec);
  return 0;
}
