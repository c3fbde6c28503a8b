#pragma once
// Test helper: a WindowObserver that appends an engine life's trace to a file,
// for the tests that kill lives and compare their traces with an
// uninterrupted run: "w <epoch> <step> <clip> <window>" per window, then
// "loss <step> <loss>" once the step is done (a killed step leaves no lines).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "daemon/engine.h"

namespace kaio::test {

class TraceFile : public daemon::WindowObserver {
 public:
  explicit TraceFile(const std::filesystem::path& file) : out_(std::fopen(file.c_str(), "a"), &std::fclose) {}

  void on_window(int epoch, int64_t step, const std::string& clip, int window) override {
    pending_ +=
        "w " + std::to_string(epoch) + " " + std::to_string(step) + " " + clip + " " + std::to_string(window) + "\n";
  }
  void on_step(int64_t step, double loss) override {
    if (!out_) return;
    std::fprintf(out_.get(), "%sloss %lld %.9g\n", pending_.c_str(), static_cast<long long>(step), loss);
    std::fflush(out_.get());
    pending_.clear();
  }

 private:
  std::unique_ptr<FILE, int (*)(FILE*)> out_;
  std::string pending_;
};

}  // namespace kaio::test
