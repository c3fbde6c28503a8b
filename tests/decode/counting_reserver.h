#pragma once
// A SpaceReserver that keeps an exact ledger of held bytes under a budget, so
// tests can check what the pipeline claims and releases.
#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/io.h"

namespace kaio::decode::testing {

class CountingReserver : public kaio::SpaceReserver {
 public:
  explicit CountingReserver(uint64_t budget) : budget_(budget) {}

  std::unique_ptr<kaio::SpaceClaim> reserve(uint64_t bytes, const std::string& what) override {
    std::lock_guard lock(mu_);
    if (held_ + bytes > budget_) throw Error(ErrorKind::budget, what + ": over the test budget");
    held_ += bytes;
    peak_ = std::max(peak_, held_);
    whats_.push_back(what);
    return std::make_unique<Claim>(*this, bytes);
  }

  std::unique_ptr<kaio::SpaceClaim> try_reserve(uint64_t bytes, const std::string& what) override {
    {
      std::lock_guard lock(mu_);
      if (held_ + bytes > budget_) return nullptr;
    }
    return reserve(bytes, what);
  }

  uint64_t held() const {
    std::lock_guard lock(mu_);
    return held_;
  }
  uint64_t peak() const {
    std::lock_guard lock(mu_);
    return peak_;
  }
  std::vector<std::string> whats() const {
    std::lock_guard lock(mu_);
    return whats_;
  }

 private:
  class Claim : public kaio::SpaceClaim {
   public:
    Claim(CountingReserver& owner, uint64_t bytes) : owner_(owner), bytes_(bytes) {}
    ~Claim() override { owner_.adjust(bytes_, 0); }
    uint64_t bytes() const override { return bytes_; }
    void resize(uint64_t bytes) override {
      owner_.adjust(bytes_, bytes);
      bytes_ = bytes;
    }

   private:
    CountingReserver& owner_;
    uint64_t bytes_;
  };

  void adjust(uint64_t from, uint64_t to) {
    std::lock_guard lock(mu_);
    if (to > from && held_ + (to - from) > budget_) throw Error(ErrorKind::budget, "claim growth over the test budget");
    held_ = held_ - from + to;
    peak_ = std::max(peak_, held_);
  }

  mutable std::mutex mu_;
  uint64_t budget_;
  uint64_t held_ = 0;
  uint64_t peak_ = 0;
  std::vector<std::string> whats_;
};

}  // namespace kaio::decode::testing
