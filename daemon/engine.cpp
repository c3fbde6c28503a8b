// The engine's root: it owns the core and the stages beside it, starts and
// stops the producer and trainer threads, and routes reload, status and
// control commands. Each stage keeps its own state (see the header comment
// of each daemon/*.h); what they share is the core's, under its one lock.
#include "daemon/engine.h"

#include <spdlog/spdlog.h>

#include <optional>

#include "common/units.h"
#include "daemon/consumer_feed.h"
#include "daemon/control_commands.h"
#include "daemon/data_plane.h"
#include "daemon/downloads.h"
#include "daemon/engine_core.h"
#include "daemon/engine_status.h"
#include "daemon/producer.h"
#include "daemon/run_series_writer.h"
#include "daemon/startup.h"
#include "daemon/training_loop.h"

namespace kaio::daemon {

struct Engine::Impl {
  explicit Impl(Config config) : core(std::move(config)), downloads(core), producer(core, downloads) {}

  EngineCore core;
  Downloads downloads;
  Producer producer;
  WindowObserver* observer = nullptr;
  std::optional<CheckpointRing> ring;      // from the local start-up to connect()
  std::unique_ptr<TrainingLoop> training;  // train.backend other than "external"
  std::unique_ptr<ConsumerFeed> feed;      // train.backend "external"
  std::unique_ptr<DataPlaneServer> data_server;
  std::thread producer_thread, trainer_thread;
  RunSeriesWriter series{core.ledger, [this] { return derive_status(status_inputs(core)); }};
};

Engine::Engine(Config config, WindowObserver* observer, Startup startup, std::shared_ptr<train::Collective> job)
    : impl_(std::make_unique<Impl>(std::move(config))) {
  auto& m = *impl_;
  m.observer = observer;
  if (job) m.core.job = std::move(job);
  m.ring.emplace(start_up_local(m.core, m.downloads));
  m.core.run_series = &m.series;
  m.series.start();
  if (startup == Startup::complete) connect();
}

void Engine::connect() {
  auto& m = *impl_;
  auto resumed = start_up_remote(m.core, m.downloads, std::move(*m.ring));
  m.ring.reset();
  if (m.core.stop.stop_requested()) throw Error(ErrorKind::cancelled, "kaiod stopped while starting");
  if (m.core.config.train.backend == "external")
    m.feed = std::make_unique<ConsumerFeed>(m.core, m.downloads);
  else
    m.training = std::make_unique<TrainingLoop>(m.core, m.downloads, std::move(resumed), m.observer);
  std::lock_guard lock(m.core.mutex);
  m.core.starting.clear();
}

Engine::~Engine() {
  stop();
}

void Engine::start() {
  auto& m = *impl_;
  if (m.core.paused) m.core.downloader->pause();
  m.producer_thread = std::thread([&m] { m.producer.run(m.core.stop.get_token()); });
  if (m.feed) {
    m.data_server = std::make_unique<DataPlaneServer>(m.core.config, *m.feed);
    spdlog::info("data plane: consumers served on {}", m.data_server->path().string());
    m.trainer_thread = std::thread([&m] { m.feed->run(m.core.stop.get_token()); });
  } else {
    m.trainer_thread = std::thread([&m] { m.training->run(m.core.stop.get_token()); });
  }
}

void Engine::stop() {
  auto& m = *impl_;
  m.core.stop.request_stop();
  m.core.changed.notify_all();
  if (!m.producer_thread.joinable() && !m.trainer_thread.joinable()) {
    m.core.hub->cancel();  // a connect() waiting for the Hub ends now
    m.series.stop();
    return;
  }
  m.data_server.reset();                                     // its connections' waits end with the stop
  if (m.trainer_thread.joinable()) m.trainer_thread.join();  // writes the last checkpoint
  m.core.hub->cancel();
  m.core.downloader->stop();
  m.core.budget->cancel();
  if (m.producer_thread.joinable()) m.producer_thread.join();
  m.series.stop();  // after the last checkpoint
}

bool Engine::finished() const {
  std::lock_guard lock(impl_->core.mutex);
  return impl_->core.done || impl_->core.failed;
}

void Engine::reload(const Config& changed) {
  auto& core = impl_->core;
  cache::check_budget_fits(changed.storage.budget, core.standing_bytes, "the working set");
  std::lock_guard lock(core.mutex);
  auto& c = core.config;
  uint64_t in_use = core.budget->status().total;
  if (changed.storage.budget < in_use)
    spdlog::warn("reload: storage.budget {} is below the {} in use: no new work starts until enough is released",
                 format_size(changed.storage.budget), format_size(in_use));
  core.budget->set_budget(changed.storage.budget);
  core.downloader->set_limits(changed.fetch.parallel_files, changed.fetch.bandwidth_limit);
  spdlog::info(
      "reload: storage.budget {} (was {}), fetch.parallel_files {} (was {}), fetch.bandwidth_limit {}/s (was {}/s), "
      "decode.workers {} (was {}, from the next archive); other keys take effect at the next start",
      format_size(changed.storage.budget), format_size(c.storage.budget), changed.fetch.parallel_files,
      c.fetch.parallel_files, format_size(changed.fetch.bandwidth_limit), format_size(c.fetch.bandwidth_limit),
      changed.decode.workers, c.decode.workers);
  c.storage.budget = changed.storage.budget;
  c.fetch.parallel_files = changed.fetch.parallel_files;
  c.fetch.bandwidth_limit = changed.fetch.bandwidth_limit;
  c.decode.workers = changed.decode.workers;
  core.changed.notify_all();
}

ServiceStatus Engine::status() {
  return derive_status(status_inputs(impl_->core));
}

nlohmann::json Engine::handle_control(const std::string& cmd, const nlohmann::json& args, const Peer& peer) {
  auto& m = *impl_;
  return run_control_command({m.core, m.trainer_thread.joinable()}, cmd, args, peer);
}

}  // namespace kaio::daemon
