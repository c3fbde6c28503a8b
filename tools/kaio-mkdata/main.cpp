// kaio-mkdata: writes a sample dataset in the LLaVA-Video-178K or
// PhysicalAI-Autonomous-Vehicles layout (see synth.h).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
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
    "                   [--target-bytes SIZE] [--encoder NAME] [--progress]\n"
    "  --progress  a progress line on stderr after each batch of clips (the default when stderr is a terminal)\n";

[[noreturn]] void usage(const std::string& why) {
  throw kaio::Error(kaio::ErrorKind::usage, why + "\n" + kUsage);
}

struct Options {
  kaio::mkdata::DatasetSpec spec;
  bool progress = isatty(STDERR_FILENO) != 0;
};

Options parse(int argc, char** argv) {
  Options options;
  auto& spec = options.spec;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (flag == "--progress") {
      options.progress = true;
      continue;
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
  return options;
}

// "kaio-mkdata: 48.2 MB of 300.0 MB (16%), 205 clips, 6 archives, 31 s, about 160 s left"; on a
// terminal the line is redrawn in place.
kaio::mkdata::DatasetProgress progress_printer(const kaio::mkdata::DatasetSpec& spec) {
  auto start = std::chrono::steady_clock::now();
  bool tty = isatty(STDERR_FILENO) != 0;
  return [&spec, start, tty](const kaio::mkdata::DatasetSummary& s) {
    double done = spec.target_bytes > 0 ? static_cast<double>(s.bytes) / static_cast<double>(spec.target_bytes)
                                        : static_cast<double>(s.clips) / spec.clips;
    done = std::min(done, 1.0);
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string of = spec.target_bytes > 0 ? kaio::format_size(s.bytes) + " of " + kaio::format_size(spec.target_bytes)
                                           : std::to_string(s.clips) + " of " + std::to_string(spec.clips) + " clips";
    std::string left = done > 0 ? fmt::format(", about {:.0f} s left", elapsed * (1 - done) / done) : "";
    std::fprintf(stderr, "%skaio-mkdata: %s (%.0f%%), %d clips, %zu archives, %.0f s%s%s", tty ? "\r" : "", of.c_str(),
                 100 * done, s.clips, s.archives.size(), elapsed, left.c_str(), tty ? "\033[K" : "\n");
    std::fflush(stderr);
  };
}

}  // namespace

int main(int argc, char** argv) {
  try {
    kaio::setup_logging("info", "kaio-mkdata");
    av_log_set_level(AV_LOG_ERROR);  // the encoder's statistics are noise here
    auto options = parse(argc, argv);
    auto summary = kaio::mkdata::write_dataset(
        options.spec, options.progress ? progress_printer(options.spec) : kaio::mkdata::DatasetProgress{});
    if (options.progress && isatty(STDERR_FILENO)) std::fputc('\n', stderr);
    std::printf("%d clips, %zu archives, %llu bytes, encoder %s\n", summary.clips, summary.archives.size(),
                static_cast<unsigned long long>(summary.bytes), summary.encoder.c_str());
    return 0;
  } catch (const kaio::Error& e) {
    std::cerr << "kaio-mkdata: " << e.what() << "\n";
    return e.kind() == kaio::ErrorKind::usage ? 2 : 1;
  }
}
