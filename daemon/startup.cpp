// start_up_local() and start_up_remote() (startup.h): the two phases of
// start-up; they fill the core and own nothing afterwards.
#include "daemon/startup.h"

#include <spdlog/spdlog.h>

#include <thread>

#include "cache/recovery.h"
#include "common/fs.h"
#include "common/units.h"
#include "decode/pipeline.h"

namespace kaio::daemon {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Downloads kept from a run with a larger budget can leave no room under this
// one. They are the one thing on disk that can be fetched again, so they go
// (recovery then rolls their files back) rather than kaiod refusing to start.
bool drop_downloads_over_budget(EngineCore& core) {
  const auto& config = core.config;
  uint64_t on_disk = core.bytes_on_disk();
  uint64_t allowance = EngineCore::ledger_allowance(config);
  if (on_disk + allowance <= config.storage.budget) return false;
  bool dropped = false;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(core.download_dir, ec)) {
    spdlog::info(
        "download {} ({}) kept from the last run removed: {} on disk and {} for the ledger exceed storage.budget {}",
        entry.path().string(), format_size(disk_usage(entry.path())), format_size(on_disk), format_size(allowance),
        format_size(config.storage.budget));
    dropped = fs::remove(entry.path(), ec) || dropped;
  }
  return dropped;
}

void make_budget(EngineCore& core) {
  cache::BudgetOptions options;
  options.budget = core.config.storage.budget;
  options.free_disk_floor = core.config.storage.free_disk_floor;
  options.cache_dir = core.config.storage.cache_dir;
  options.state_dir = core.config.storage.state_dir;
  options.ledger_allowance = EngineCore::ledger_allowance(core.config);
  core.budget = std::make_unique<cache::Budget>(options);
}

// In a job every rank resumes from the newest step all of them hold: a rank
// killed while the ranks wrote one step's checkpoints left that step on some
// ranks only (none deleted anything it covers: that waits for every rank's).
// The newer ones go, before the budget and the ring adopt them.
void drop_checkpoints_ahead_of_the_job(EngineCore& core) {
  auto held = core.ledger.checkpoints();
  int64_t common = held.empty() ? -1 : held.back().step;
  core.job->allreduce_min(&common, 1);
  for (; !held.empty() && held.back().step > common; held.pop_back()) {
    spdlog::warn("job: checkpoint {} of step {} is newer than the step every rank holds ({}): dropped",
                 held.back().path.string(), held.back().step, common);
    core.ledger.remove_checkpoint(held.back().path);
    fs::remove(held.back().path);
    // The position row was the dropped step's; it becomes the kept one's (its samples stay an upper bound).
    if (held.size() > 1) {
      const auto& kept = held[held.size() - 2];
      core.ledger.save_position(
          {cache::PlanCursor::parse(kept.cursor).epoch, kept.step, core.ledger.position().samples, kept.cursor});
    }
  }
}

// Recovery, then the budget, which adopts the shards and checkpoints the
// ledger vouches for; downloads kept on disk stay in its baseline.
void recover_and_budget(EngineCore& core, Downloads& downloads, CheckpointRing& ring) {
  const auto& storage = core.config.storage;
  cache::recover(core.ledger, storage.cache_dir, storage.state_dir);
  drop_checkpoints_ahead_of_the_job(core);
  int stale = decode::remove_stale_temporaries(core.work_dir);  // recover() has logged its report
  if (stale > 0) spdlog::info("recovery: {} decode temporaries removed", stale);
  if (drop_downloads_over_budget(core)) cache::recover(core.ledger, storage.cache_dir, storage.state_dir);
  for (const auto& d : {core.work_dir, core.download_dir, core.checkpoint_dir}) fs::create_directories(d);
  make_budget(core);
  auto known = core.ledger.known_paths();
  for (const auto& shard : known.shards) {
    if (!fs::exists(shard.path)) continue;
    core.shard_claims[shard.clip] = core.budget->adopt_existing(shard.path);
    core.shard_paths[shard.clip] = shard.path;
  }
  for (const auto& record : core.ledger.checkpoints())
    if (fs::exists(record.path)) ring.adopt(record.path, core.budget->adopt_existing(record.path));
  downloads.find_kept();
}

// The clients only: neither connects before it is asked something.
void make_hub_clients(EngineCore& core) {
  std::string endpoint = fetch::resolve_endpoint(core.config.source);
  if (endpoint.rfind("http://", 0) == 0) spdlog::warn("endpoint {} is plain http: traffic is not encrypted", endpoint);
  auto token = fetch::resolve_token(core.config.source);
  core.hub = std::make_unique<fetch::HubClient>(endpoint, token, core.config.fetch);
  core.downloader = std::make_unique<fetch::Downloader>(endpoint, token, core.config.fetch);
}

void set_step(EngineCore& core, std::string step) {
  std::lock_guard lock(core.mutex);
  core.starting = std::move(step);
}

// Waits (retrying with backoff) for as long as the Hub is unreachable.
void pin_and_list(EngineCore& core) {
  const auto& source = core.config.source;
  auto& ledger = core.ledger;
  auto pinned = ledger.source();
  if (pinned && pinned->repo == source.repo && pinned->revision == source.revision && !ledger.files().empty()) {
    std::lock_guard lock(core.mutex);
    core.commit_sha = pinned->commit_sha;
    core.files = ledger.files();
    spdlog::info("source {}@{} pinned at {}: {} files (listing cached)", source.repo, source.revision, core.commit_sha,
                 core.files.size());
    return;
  }
  set_step(core, "pinning " + source.repo + "@" + source.revision + " at " + core.hub->endpoint());
  std::string sha = core.hub->resolve_revision(source.repo, source.revision);
  json selection = {{"include", source.include}, {"exclude", source.exclude}};
  auto record = ledger.pin_source({core.hub->endpoint(), source.repo, source.revision, sha, selection.dump()});
  set_step(core, "listing the files of " + source.repo + " at " + record.commit_sha);
  std::vector<state::FileRecord> listed;
  for (const auto& f : core.hub->list_files(source.repo, record.commit_sha, source.include, source.exclude))
    listed.push_back({"", f.path, f.size, f.git_oid, f.sha256});
  ledger.upsert_files(source.repo, std::move(listed));
  std::lock_guard lock(core.mutex);
  core.commit_sha = record.commit_sha;
  core.files = ledger.files();
  spdlog::info("source {}@{} pinned at {}: {} files selected", source.repo, source.revision, core.commit_sha,
               core.files.size());
  if (core.files.empty()) throw Error(ErrorKind::config, "source.include selects no file of " + source.repo);
}

std::unique_ptr<train::Trainer> create_trainer(const Config& config, std::shared_ptr<train::Collective> job) {
  TrainConfig train_config = config.train;
  if (train_config.threads == 0) {
    // The cores the decode workers do not use: OpenMP threads that share a
    // core with a busy decoder spin at barriers and lose their turn (a step
    // ran 6x slower with 2 threads than with 1 on a 2-core machine decoding).
    int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    train_config.threads = std::max(1, cores - config.decode.workers * config.decode.codec_threads);
  }
  auto trainer = train::Trainer::create(train_config, config.decode.frames, config.decode.size, std::move(job));
  if (!trainer->backend_note().empty()) spdlog::info("trainer: {}", trainer->backend_note());
  return trainer;
}

// The latest checkpoint's model and plan position, and the training figures
// status shows from it.
cache::PlanCursor resume(EngineCore& core, train::Trainer& trainer) {
  cache::PlanCursor cursor;
  auto checkpoints = core.ledger.checkpoints();
  std::lock_guard lock(core.mutex);
  if (!checkpoints.empty()) {
    const auto& latest = checkpoints.back();
    cursor = cache::PlanCursor::parse(trainer.load_checkpoint(latest.path));
    core.checkpoint_step = latest.step;
    core.trained_steps = trainer.steps_done();
    spdlog::info("resumed from checkpoint {} at step {} ({})", latest.path.string(), latest.step, cursor.to_string());
  }
  core.samples = core.ledger.position().samples;
  core.epoch = cursor.epoch;
  return cursor;
}

// train.backend "external": the plan position of the oldest window a
// consumer has not committed (docs/data-plane.md), saved with each commit.
cache::PlanCursor resume_data_plane(EngineCore& core) {
  auto position = core.ledger.data_plane_position();
  cache::PlanCursor cursor;
  std::lock_guard lock(core.mutex);
  if (!position.cursor.empty()) {
    cursor = cache::PlanCursor::parse(position.cursor);
    spdlog::info("data plane resumes at epoch {} window {} ({})", position.epoch, position.global, position.cursor);
  }
  core.epoch = cursor.epoch;
  return cursor;
}

// The working-set check has made sure that the standing claims fit once the
// downloads kept from the last run are gone; they go one by one until they do.
std::unique_ptr<SpaceClaim> reserve_at_start(EngineCore& core, Downloads& downloads, uint64_t bytes,
                                             const std::string& what) {
  for (;;) {
    if (auto claim = core.budget->try_reserve(bytes, what)) return claim;
    if (!downloads.give_back_kept(core.epoch)) return core.budget->reserve(bytes, what);
  }
}

}  // namespace

CheckpointRing start_up_local(EngineCore& core, Downloads& downloads) {
  CheckpointRing ring(core.ledger, core.config.train.keep_checkpoints);
  recover_and_budget(core, downloads, ring);
  auto pause = core.ledger.pause_state();
  core.paused = pause.paused;
  core.pause_reason = pause.reason;
  // Status (and the run series' start row) shows the step the run resumes
  // from while connect() still waits for the Hub and the trainer.
  if (auto checkpoints = core.ledger.checkpoints(); !checkpoints.empty())
    core.checkpoint_step = core.trained_steps = checkpoints.back().step;
  make_hub_clients(core);
  return ring;
}

Resumed start_up_remote(EngineCore& core, Downloads& downloads, CheckpointRing ring) {
  set_step(core, "reading the source");
  pin_and_list(core);
  std::unique_ptr<train::Trainer> trainer;
  cache::PlanCursor cursor;
  if (core.config.train.backend == "external") {
    cursor = resume_data_plane(core);
    std::lock_guard lock(core.mutex);
    core.backend = "external";
  } else {
    set_step(core, "creating the trainer");
    trainer = create_trainer(core.config, core.job);
    cursor = resume(core, *trainer);
    if (core.job->world() > 1) set_step(core, "joining the job's other ranks");
    trainer->join_job();
    std::lock_guard lock(core.mutex);
    core.trainer_checkpoint_bytes = trainer->checkpoint_bytes();
    core.backend = trainer->backend();
  }
  core.check_working_set();
  {
    std::lock_guard lock(core.mutex);
    core.new_sequence(cursor);
  }
  ring.drop_over_keep();
  // Checkpoints write into standing claims so that freeing space never waits for space.
  ring.reserve_standing(core.checkpoint_file_bytes(), [&](uint64_t bytes, const std::string& what) {
    return reserve_at_start(core, downloads, bytes, what);
  });
  // From here a claim larger than what the fixed working set leaves (a
  // member or a clip too large for this budget) fails at once, alone.
  // Kept downloads go when the space is needed, so they do not count.
  core.budget->set_standing(core.fixed_bytes);
  return {std::move(trainer), cursor, std::move(ring)};
}

}  // namespace kaio::daemon
