#pragma once
// Test helper: a consumer of kaiod's data socket (docs/data-plane.md) as a
// trainer would be one, in C++: one connection per worker, descriptors
// received with recvmsg, shards mapped read-only, each window's frames
// hashed (FNV-1a 64) so runs can be compared byte for byte. A worker keeps
// the last two clips mapped and reports the others as `unmapped`.
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/fd.h"
#include "daemon/line_server.h"

namespace kaio::test {

inline uint64_t fnv1a(const uint8_t* data, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

// One connection: requests and replies, with the descriptors a reply carries.
class DataConnection {
 public:
  explicit DataConnection(const std::filesystem::path& socket) : fd_(daemon::connect_unix(socket)) {}

  nlohmann::json call(const std::string& cmd, const nlohmann::json& args, std::vector<Fd>* fds = nullptr) {
    nlohmann::json request = {{"v", 1}, {"cmd", cmd}, {"args", args}};
    return nlohmann::json::parse(call_raw(request.dump() + "\n", fds));
  }

  int fd() const { return fd_.get(); }

  // Sends raw bytes and returns the reply line; throws when none comes within 40 s.
  std::string call_raw(const std::string& bytes, std::vector<Fd>* fds = nullptr) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
    if (!daemon::write_all(fd_.get(), bytes, deadline)) throw std::runtime_error("request not sent");
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{fd_.get(), POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
        throw std::runtime_error("no reply within 40 s");
      if (!receive(fds)) throw std::runtime_error("kaiod closed the connection");
    }
  }

 private:
  bool receive(std::vector<Fd>* fds) {
    char data[65536];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 256)];
    iovec iov{data, sizeof data};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) return false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        Fd owned(fd);
        if (fds) fds->push_back(std::move(owned));
      }
    }
    buffer_.append(data, static_cast<size_t>(n));
    return true;
  }

  Fd fd_;
  std::string buffer_;
};

// A read-only mapping of a shard received as a descriptor.
class MappedShard {
 public:
  MappedShard(int fd, size_t bytes) : bytes_(bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of a shard failed");
    data_ = static_cast<const uint8_t*>(p);
  }
  ~MappedShard() { ::munmap(const_cast<uint8_t*>(data_), bytes_); }
  MappedShard(const MappedShard&) = delete;
  MappedShard& operator=(const MappedShard&) = delete;
  const uint8_t* data() const { return data_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t bytes_;
};

struct GotWindow {
  int epoch = 0;
  int64_t index = 0, global = 0;
  std::string clip;
  int window = 0;
  uint64_t hash = 0;
  std::string caption;
};

// One worker of one rank.
class TestWorker {
 public:
  explicit TestWorker(const std::filesystem::path& socket) : conn_(socket) {}

  nlohmann::json attach(const nlohmann::json& args) {
    auto reply = conn_.call("attach", args);
    if (reply.value("ok", false))
      window_bytes_ = reply["result"]["frames"].get<size_t>() * reply["result"]["height"].get<size_t>() *
                      reply["result"]["width"].get<size_t>() * 3;
    return reply;
  }

  // One next request; the windows it got, hashed. `reply` gets the result object.
  std::vector<GotWindow> next(nlohmann::json& reply, int wait_ms = 2000) {
    std::vector<Fd> fds;
    nlohmann::json args = {{"max", 64}, {"wait_ms", wait_ms}, {"unmapped", unmapped_}};
    auto answer = conn_.call("next", args, &fds);
    if (!answer.value("ok", false)) throw std::runtime_error("next refused: " + answer.dump());
    unmapped_ = nlohmann::json::array();
    reply = answer["result"];
    std::vector<GotWindow> got;
    for (const auto& w : reply["windows"]) {
      std::string clip = w["clip"];
      if (!w["fd"].is_null()) {
        auto& fd = fds.at(w["fd"].get<size_t>());
        shards_[clip] = std::make_unique<MappedShard>(fd.get(), w["shard_bytes"].get<size_t>());
        std::erase(lru_, clip);
        lru_.push_back(clip);
      }
      const uint8_t* frames = shards_.at(clip)->data() + w["offset"].get<size_t>();
      got.push_back(
          {w["epoch"], w["index"], w["global"], clip, w["window"], fnv1a(frames, window_bytes_), w["caption"]});
    }
    while (lru_.size() > 2) {  // the clips before the last two go, and kaiod is told
      shards_.erase(lru_.front());
      unmapped_.push_back(lru_.front());
      lru_.pop_front();
    }
    return got;
  }

  DataConnection& connection() { return conn_; }

 private:
  DataConnection conn_;
  size_t window_bytes_ = 0;
  std::map<std::string, std::unique_ptr<MappedShard>> shards_;
  std::deque<std::string> lru_;
  nlohmann::json unmapped_ = nlohmann::json::array();
};

}  // namespace kaio::test
