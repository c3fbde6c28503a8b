#pragma once
// A SpaceReserver that keeps an exact ledger of held bytes under a budget, so
// tests can check what the pipeline claims and releases.
//
// Like the real budget, a reservation larger than the whole budget throws
// Error(budget) (from try_reserve too). One that does not fit beside what is
// held throws as well by default; with Mode::wait it waits for releases, as
// cache::Budget does.
#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/io.h"

namespace kaio::decode::testing {

class CountingReserver : public kaio::SpaceReserver {
 public:
  enum class Mode { fail, wait };
  explicit CountingReserver(uint64_t budget, Mode mode = Mode::fail) : budget_(budget), mode_(mode) {}

  std::unique_ptr<kaio::SpaceClaim> reserve(uint64_t bytes, const std::string& what) override {
    std::unique_lock lock(mu_);
    if (bytes > budget_) throw Error(ErrorKind::budget, what + ": can never fit the test budget");
    if (mode_ == Mode::wait) released_.wait(lock, [&] { return held_ + bytes <= budget_; });
    if (held_ + bytes > budget_) throw Error(ErrorKind::budget, what + ": over the test budget");
    return grant(bytes, what);
  }

  std::unique_ptr<kaio::SpaceClaim> try_reserve(uint64_t bytes, const std::string& what) override {
    std::lock_guard lock(mu_);
    if (bytes > budget_) throw Error(ErrorKind::budget, what + ": can never fit the test budget");
    if (held_ + bytes > budget_) return nullptr;
    return grant(bytes, what);
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
  // Bytes held now by claims whose `what` contains `part`.
  uint64_t held_for(const std::string& part) const {
    std::lock_guard lock(mu_);
    uint64_t sum = 0;
    for (const auto* c : live_)
      if (c->what().find(part) != std::string::npos) sum += c->bytes();
    return sum;
  }

 private:
  class Claim : public kaio::SpaceClaim {
   public:
    Claim(CountingReserver& owner, uint64_t bytes, std::string what)
        : owner_(owner), bytes_(bytes), what_(std::move(what)) {}
    ~Claim() override { owner_.drop(this); }
    uint64_t bytes() const override { return bytes_; }
    void resize(uint64_t bytes) override { owner_.adjust(this, bytes); }
    const std::string& what() const { return what_; }

   private:
    friend class CountingReserver;
    CountingReserver& owner_;
    uint64_t bytes_;  // guarded by owner_.mu_ once granted
    std::string what_;
  };

  std::unique_ptr<kaio::SpaceClaim> grant(uint64_t bytes, const std::string& what) {
    held_ += bytes;
    peak_ = std::max(peak_, held_);
    whats_.push_back(what);
    auto claim = std::make_unique<Claim>(*this, bytes, what);
    live_.push_back(claim.get());
    return claim;
  }

  void adjust(Claim* c, uint64_t to) {
    std::lock_guard lock(mu_);
    uint64_t from = c->bytes_;
    if (to > from && held_ + (to - from) > budget_) throw Error(ErrorKind::budget, "claim growth over the test budget");
    held_ = held_ - from + to;
    peak_ = std::max(peak_, held_);
    c->bytes_ = to;
    released_.notify_all();
  }

  void drop(Claim* c) {
    std::lock_guard lock(mu_);
    held_ -= c->bytes_;
    live_.erase(std::find(live_.begin(), live_.end(), c));
    released_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable released_;
  uint64_t budget_;
  Mode mode_;
  uint64_t held_ = 0;
  uint64_t peak_ = 0;
  std::vector<std::string> whats_;
  std::vector<Claim*> live_;
};

}  // namespace kaio::decode::testing
