#pragma once
// Internal: the ByteSource behind HubClient::open_stream. A producer thread
// downloads into a bounded buffer (8 MiB) and resumes with Range after faults,
// reusing the signed CDN URL while it is fresh and resolving again through the
// Hub when it may have expired (a reader can pause for a long time); read()
// hands the bytes over in order and reports a size or hash mismatch at EOF.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/error.h"
#include "common/io.h"
#include "fetch/hub.h"

namespace kaio::fetch {

struct StreamTarget {
  std::string endpoint;
  std::optional<std::string> token;
  std::string url;   // the resolve URL
  std::string name;  // repo/path, for messages
  RepoFile file;
};

class StreamSource : public kaio::ByteSource {
 public:
  StreamSource(StreamTarget target, const kaio::FetchConfig& config, HubTuning tuning,
               std::shared_ptr<std::atomic<bool>> cancelled, std::shared_ptr<NetworkTracker> network);
  ~StreamSource() override;
  size_t read(std::span<std::byte> out) override;
  std::string describe() const override { return target_.name; }

  // Called by the transfer; false makes it stop.
  bool push(const char* data, size_t size);
  bool stopping() const { return closing_ || *cancelled_; }

 private:
  void produce();
  void finish(std::optional<Error> error);

  StreamTarget target_;
  kaio::FetchConfig config_;
  HubTuning tuning_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
  std::shared_ptr<NetworkTracker> network_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::vector<std::byte>> chunks_;
  size_t front_offset_ = 0;  // bytes of chunks_.front() already read
  size_t buffered_ = 0;
  bool done_ = false;
  std::optional<Error> error_;
  std::atomic<bool> closing_{false};
  std::thread producer_;
};

}  // namespace kaio::fetch
