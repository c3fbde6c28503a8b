// kaio-decode-stage: kaiod's decode stage alone (bench/e2e.sh, pipeline
// efficiency). Runs the same ArchiveDecoder kaiod runs, with the config's
// decode settings (workers, codec threads, window spec), over archives that
// are already on disk, one archive after another as kaiod's producer does,
// deleting each shard as soon as it is delivered. No budget: nothing waits.
// Prints {"archives","clips","windows","seconds"} as one JSON line.
// Usage: kaio-decode-stage CONFIG.json WORK_DIR ARCHIVE...
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/error.h"
#include "common/io.h"
#include "decode/file_source.h"
#include "decode/pipeline.h"

namespace {

class Unbounded final : public kaio::SpaceClaim {
 public:
  explicit Unbounded(uint64_t bytes) : bytes_(bytes) {}
  uint64_t bytes() const override { return bytes_; }
  void resize(uint64_t bytes) override { bytes_ = bytes; }

 private:
  uint64_t bytes_;
};

// Every reservation fits at once: the stage is measured without the budget.
// No `override` on purpose: the reserver interface is changing upstream and
// this compiles against either shape of it.
class NoBudget final : public kaio::SpaceReserver {
 public:
  std::unique_ptr<kaio::SpaceClaim> reserve(uint64_t bytes, const std::string&) {
    return std::make_unique<Unbounded>(bytes);
  }
  std::unique_ptr<kaio::SpaceClaim> try_reserve(uint64_t bytes, const std::string&) {
    return std::make_unique<Unbounded>(bytes);
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: kaio-decode-stage CONFIG.json WORK_DIR ARCHIVE...\n");
    return 2;
  }
  try {
    spdlog::set_level(spdlog::level::warn);
    const kaio::Config config = kaio::load_config(argv[1]);
    const std::filesystem::path work = argv[2];
    std::filesystem::create_directories(work);
    NoBudget reserver;
    kaio::decode::ArchiveDecoder decoder(config.decode, work, reserver);
    std::atomic<int64_t> clips{0}, windows{0}, failed{0};
    std::stop_source never;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 3; i < argc; ++i) {
      decoder.run(
          std::make_unique<kaio::decode::FileSource>(argv[i]), std::filesystem::path(argv[i]).filename().string(),
          nullptr,
          [&](kaio::decode::ClipResult r) {
            if (!r.error.empty()) {
              failed += 1;
              std::fprintf(stderr, "kaio-decode-stage: %s: %s\n", r.member.c_str(), r.error.c_str());
            }
            clips += 1;
            windows += r.windows;
            if (!r.shard.empty()) std::filesystem::remove(r.shard);
          },
          never.get_token());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("{\"archives\": %d, \"clips\": %lld, \"windows\": %lld, \"failed\": %lld, \"seconds\": %.4f}\n",
                argc - 3, static_cast<long long>(clips.load()), static_cast<long long>(windows.load()),
                static_cast<long long>(failed.load()), seconds);
    return failed.load() == 0 ? 0 : 1;
  } catch (const kaio::Error& e) {
    std::fprintf(stderr, "kaio-decode-stage: %s\n", e.what());
    return 1;
  }
}
