#pragma once
// kaio-hub: a small Hub-compatible HTTP/1.1 server for tests and demos. A main
// listener answers the API and resolve URLs; a second one on another loopback
// address plays the CDN that LFS files redirect to. Faults can be injected at
// start and changed while running (POST /_kaio/faults).
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace kaio::hub {

struct HubOptions {
  std::filesystem::path root;
  std::string host = "127.0.0.1";
  std::string cdn_host = "127.0.0.2";
  int port = 0;  // 0: the kernel picks
  int cdn_port = 0;
  uint64_t lfs_threshold = 1'000'000;
  int page_size = 1000;  // tree entries per page
  std::string token;     // non-empty: repos are gated
  uint64_t seed = 1;
  nlohmann::json faults = nlohmann::json::object();  // same keys as POST /_kaio/faults
};

class HubServer {
 public:
  explicit HubServer(HubOptions options);
  ~HubServer();
  int port() const;
  int cdn_port() const;
  void serve_forever();  // accepts on both listeners until the process ends

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kaio::hub
