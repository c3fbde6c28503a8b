// kaio-mkdata: writes a sample dataset in the LLaVA-Video-178K or
// PhysicalAI-Autonomous-Vehicles layout (see synth.h).
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "synth.h"

extern "C" {
#include <libavutil/log.h>
}

namespace {

constexpr const char* kUsage =
    "usage: kaio-mkdata --out DIR [--layout llava|physicalai] [--seed N] [--clips N]\n"
    "                   [--clips-per-archive N] [--seconds S] [--width W] [--height H] [--fps F]\n"
    "                   [--target-bytes SIZE] [--encoder NAME]\n";

[[noreturn]] void usage(const std::string& why) {
  throw kaio::Error(kaio::ErrorKind::usage, why + "\n" + kUsage);
}

kaio::mkdata::DatasetSpec parse(int argc, char** argv) {
  kaio::mkdata::DatasetSpec spec;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) usage("missing value for " + std::string(flag));
    std::string value = argv[++i];
    try {
      if (flag == "--out") {
        spec.out = value;
      } else if (flag == "--layout") {
        if (value == "llava") {
          spec.layout = kaio::mkdata::Layout::llava;
        } else if (value == "physicalai") {
          spec.layout = kaio::mkdata::Layout::physicalai;
        } else {
          usage("--layout must be llava or physicalai");
        }
      } else if (flag == "--seed") {
        spec.seed = std::stoull(value);
      } else if (flag == "--clips") {
        spec.clips = std::stoi(value);
      } else if (flag == "--clips-per-archive") {
        spec.clips_per_archive = std::stoi(value);
      } else if (flag == "--seconds") {
        spec.clip.seconds = std::stod(value);
      } else if (flag == "--width") {
        spec.clip.width = std::stoi(value);
      } else if (flag == "--height") {
        spec.clip.height = std::stoi(value);
      } else if (flag == "--fps") {
        spec.clip.fps = std::stod(value);
      } else if (flag == "--encoder") {
        spec.clip.encoder = value;
      } else if (flag == "--target-bytes") {
        auto bytes = kaio::parse_size(value);
        if (!bytes) usage("--target-bytes: not a size: " + value);
        spec.target_bytes = *bytes;
      } else {
        usage("unknown flag " + std::string(flag));
      }
    } catch (const std::logic_error&) {  // stoi and friends
      usage("bad number for " + std::string(flag) + ": " + value);
    }
  }
  if (spec.out.empty()) usage("--out is required");
  if (spec.clips < 1 || spec.clips_per_archive < 1) usage("--clips and --clips-per-archive must be positive");
  return spec;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    kaio::setup_logging("info", "kaio-mkdata");
    av_log_set_level(AV_LOG_ERROR);  // the encoder's statistics are noise here
    auto summary = kaio::mkdata::write_dataset(parse(argc, argv));
    std::printf("%d clips, %zu archives, %llu bytes, encoder %s\n", summary.clips, summary.archives.size(),
                static_cast<unsigned long long>(summary.bytes), summary.encoder.c_str());
    return 0;
  } catch (const kaio::Error& e) {
    std::cerr << "kaio-mkdata: " << e.what() << "\n";
    return e.kind() == kaio::ErrorKind::usage ? 2 : 1;
  }
}
