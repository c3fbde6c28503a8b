#pragma once
// The engine: kaiod's pipeline as a library, so the daemon stays a thin shell
// and tests can drive it in-process.
//
//   Hub -> Downloader (prefetch, files in plan order) -> decode stage (one file
//   at a time in plan order, members in parallel) -> clip sequence -> trainer
//   (chunks of K clips, windows in the plan's order) -> checkpoint -> delete.
//
// Every byte written is reserved in the Budget first. The trainer consumes in
// plan order whatever order downloads finish in; a clip is deleted only after
// a checkpoint that covers all its windows is durable, so a run killed at any
// moment resumes with the same window sequence.
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/config.h"
#include "daemon/control.h"
#include "daemon/status.h"
#include "train/collective.h"

namespace kaio::daemon {

// Observes every window the trainer consumes, in order (tests and the crash
// harness compare sequences). Called on the trainer thread.
struct WindowObserver {
  virtual ~WindowObserver() = default;
  virtual void on_window(int epoch, int64_t step, const std::string& clip_id, int window) = 0;
  virtual void on_step(int64_t step, double loss) = 0;
};

class Engine {
 public:
  // `complete`: the constructor does all of start-up. `local`: only what needs
  // no network; connect() does the rest (kaiod runs it while it already
  // answers on its control socket and to signals).
  enum class Startup { complete, local };

  // Opens the ledger (refusing a second daemon on the same folders) and runs
  // recovery; with Startup::complete also connect(). Throws kaio::Error.
  // `job`: the ranks of the data-parallel job this engine is one of (null:
  // alone); the config must already be placed for its rank (place_rank).
  explicit Engine(Config config, WindowObserver* observer = nullptr, Startup startup = Startup::complete,
                  std::shared_ptr<train::Collective> job = nullptr);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Pins the source (waiting for as long as the Hub is unreachable; status
  // says so), resumes the trainer and checks that the budget can hold the
  // work. Throws kaio::Error; Error(cancelled) when stop() came first.
  void connect();
  void start();                        // starts the stages; after connect()
  void stop();                         // clean stop: .part kept, checkpoint written; ends connect()
  bool finished() const;               // done, or a fatal error
  void reload(const Config& changed);  // SIGHUP: budget, rate limits, parallelism
  ServiceStatus status();
  nlohmann::json handle_control(const std::string& cmd, const nlohmann::json& args, const Peer& peer);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kaio::daemon
