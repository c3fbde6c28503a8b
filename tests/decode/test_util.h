#pragma once
// Helpers for decode tests (their folders: tests/support/sandbox.h): clips
// made with the ffmpeg command line, and PSNR between RGB buffers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace kaio::decode::testing {

// Runs a shell command under a 120 s bound; returns its exit status and stdout.
inline int run_command(const std::string& command, std::string* out = nullptr) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(("timeout 120 " + command).c_str(), "r"), ::pclose);
  if (!pipe) return -1;
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe.get())) > 0) text.append(buf, n);
  int status = ::pclose(pipe.release());
  if (out) *out = std::move(text);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline bool has_encoder(const std::string& name) {
  static std::string list = [] {
    std::string s;
    run_command("ffmpeg -hide_banner -encoders 2>/dev/null", &s);
    return s;
  }();
  return list.find(" " + name + " ") != std::string::npos;
}

// Makes a clip from ffmpeg's moving test pattern. `extra` goes before the output name.
inline void make_clip(const std::filesystem::path& out, const std::string& size, double fps, double seconds,
                      const std::string& codec_args, const std::string& extra = "") {
  std::string cmd = "ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i testsrc2=size=" + size +
                    ":rate=" + std::to_string(fps) + ":duration=" + std::to_string(seconds) + " " + codec_args + " " +
                    extra + " '" + out.string() + "' 2>&1";
  std::string log;
  int rc = run_command(cmd, &log);
  ASSERT_EQ(rc, 0) << cmd << "\n" << log;
}

inline double psnr(const uint8_t* a, const uint8_t* b, size_t n) {
  double se = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = static_cast<double>(a[i]) - b[i];
    se += d * d;
  }
  if (se == 0) return 99;
  return 10 * std::log10(255.0 * 255.0 / (se / static_cast<double>(n)));
}

// Bytes that do not compress, from a fixed LCG.
inline std::string noise(size_t n, uint32_t seed = 1) {
  std::string s(n, '\0');
  for (auto& c : s) {
    seed = seed * 1664525u + 1013904223u;
    c = static_cast<char>(seed >> 24);
  }
  return s;
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace kaio::decode::testing
