#include "daemon/engine.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stop_token>

#include "cache/budget.h"
#include "cache/plan.h"
#include "cache/recovery.h"
#include "cache/resume.h"
#include "cache/retention.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/units.h"
#include "decode/captions.h"
#include "decode/file_source.h"
#include "decode/pipeline.h"
#include "decode/shard.h"
#include "decode/video.h"
#include "fetch/downloader.h"
#include "fetch/hub.h"
#include "state/ledger.h"
#include "train/trainer.h"

namespace kaio::daemon {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
using nlohmann::json;

// Bytes per second over the last minute or so, from a growing counter.
class Rate {
 public:
  void sample(double total) {
    auto now = Clock::now();
    points_.push_back({now, total});
    while (points_.size() > 2 && now - points_.front().first > std::chrono::seconds(30)) points_.pop_front();
  }
  double per_second() const {
    if (points_.size() < 2) return 0;
    double dt = std::chrono::duration<double>(points_.back().first - points_.front().first).count();
    return dt > 0 ? (points_.back().second - points_.front().second) / dt : 0;
  }

 private:
  std::deque<std::pair<Clock::time_point, double>> points_;
};

}  // namespace

struct Engine::Impl {
  Config config;
  WindowObserver* observer;
  fs::path work_dir, download_dir, checkpoint_dir;
  state::Ledger ledger;
  std::unique_ptr<cache::Budget> budget;
  std::unique_ptr<fetch::HubClient> hub;
  std::unique_ptr<fetch::Downloader> downloader;
  std::unique_ptr<train::Trainer> trainer;
  cache::ShardRetention retention{ledger};
  std::string commit_sha;
  std::vector<state::FileRecord> files;
  decode::CaptionMap captions;  // source.captions, read by the producer before its first file

  // Shared between the stages, guarded by `mutex`.
  std::mutex mutex;
  std::condition_variable changed;
  std::unique_ptr<cache::WindowSequence> sequence;
  std::map<std::string, std::unique_ptr<SpaceClaim>> shard_claims;  // by ledger clip id
  std::map<std::string, fs::path> shard_paths;
  std::vector<std::pair<fs::path, std::unique_ptr<SpaceClaim>>> checkpoint_claims;  // oldest first
  std::unique_ptr<SpaceClaim> spare_checkpoint_claim;
  bool paused = false, pause_acknowledged = false;
  std::string pause_reason;
  std::string state = "starting", state_detail, last_error;
  bool done = false, failed = false;
  int epoch = 0;
  double last_loss = 0;
  // What status() shows of the trainer, copied under `mutex` after each step:
  // the trainer itself is the training thread's alone.
  int64_t trained_steps = 0;
  double data_wait_fraction = 0;
  int64_t samples = 0;
  int64_t checkpoint_step = -1;
  cache::PlanCursor checkpoint_cursor;  // of the checkpoint at checkpoint_step
  std::string disk_full_reason;         // set while waiting for the filesystem to have space again
  std::set<std::string> planned;        // clips handed to this epoch's sequence by this process
  uint64_t standing_bytes = 0;          // check_working_set()
  uint64_t fixed_bytes = 0;             // standing_bytes less the chunk of shards
  double decoded_clips = 0;
  std::map<std::string, uint64_t> errors_total;  // failures since start, by ErrorKind name
  Rate download_rate, decode_rate, train_rate;

  // Downloads started ahead of the file being decoded, in plan order.
  struct Prefetch {
    size_t pos = 0;
    int epoch = 0;
    const state::FileRecord* file = nullptr;
    fs::path local;
    std::unique_ptr<SpaceClaim> claim;
    std::shared_ptr<std::promise<fetch::DownloadResult>> result;
    std::shared_future<fetch::DownloadResult> done;
  };
  std::mutex prefetch_mutex;
  std::deque<Prefetch> prefetched;
  std::set<fs::path> kept_downloads;  // found at start, in the baseline until adopted or given back

  // The training thread's open shards, by clip id. Only that thread touches
  // it, and checkpoint() (on that thread) closes a reader when retention
  // unlinks its shard, so no deleted shard stays mapped behind the budget.
  std::map<std::string, std::unique_ptr<decode::ShardReader>> shard_readers;
  // The batch being filled, also the training thread's. A pause or a stop
  // holds it untrained and checkpoints the plan position before its first
  // window, so batches stay a pure function of the plan whatever interrupts.
  std::vector<cache::WindowRef> batch;
  cache::PlanCursor batch_cursor;

  std::stop_source stop;
  std::thread producer, trainer_thread;

  Impl(Config c, WindowObserver* o)
      : config(std::move(c)),
        observer(o),
        work_dir(config.storage.cache_dir / "work"),
        download_dir(config.storage.cache_dir / "downloads"),
        checkpoint_dir(config.storage.state_dir / "checkpoints"),
        ledger(open_ledger(config)) {}

  // The standing claim for the database's growth; its WAL is truncated at half
  // of it so that db + WAL + SHM stay inside.
  static uint64_t ledger_allowance(const Config& c) { return std::min<uint64_t>(16u << 20, c.storage.budget / 8); }

  static state::Ledger open_ledger(const Config& c) {
    fs::create_directories(c.storage.state_dir);
    fs::create_directories(c.storage.cache_dir);
    state::LedgerOptions options;
    options.wal_limit_bytes = ledger_allowance(c) / 2;
    return state::Ledger::open(c.storage.state_dir, options);
  }

  void fail(const std::string& message, ErrorKind kind = ErrorKind::internal) {
    std::lock_guard lock(mutex);
    last_error = redact(message);
    ++errors_total[std::string(to_string(kind))];
    spdlog::error("{}", last_error);
  }

  // ---------- start-up ----------

  void recover_and_budget() {
    auto report = cache::recover(ledger, config.storage.cache_dir, config.storage.state_dir);
    int stale = decode::remove_stale_temporaries(work_dir);
    spdlog::info("{}; {} decode temporaries removed", report.summary(), stale);
    if (drop_downloads_over_budget())
      spdlog::info("{}", cache::recover(ledger, config.storage.cache_dir, config.storage.state_dir).summary());
    for (const auto& d : {work_dir, download_dir, checkpoint_dir}) fs::create_directories(d);
    cache::BudgetOptions options;
    options.budget = config.storage.budget;
    options.free_disk_floor = config.storage.free_disk_floor;
    options.cache_dir = config.storage.cache_dir;
    options.state_dir = config.storage.state_dir;
    options.ledger_allowance = ledger_allowance(config);
    budget = std::make_unique<cache::Budget>(options);
    auto known = ledger.known_paths();
    for (const auto& shard : known.shards) {
      if (!fs::exists(shard.path)) continue;
      shard_claims[shard.clip] = budget->adopt_existing(shard.path);
      shard_paths[shard.clip] = shard.path;
    }
    for (const auto& record : ledger.checkpoints())
      if (fs::exists(record.path)) checkpoint_claims.emplace_back(record.path, budget->adopt_existing(record.path));
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(download_dir, ec)) kept_downloads.insert(entry.path());
  }

  void pin_and_list() {
    std::string endpoint = fetch::resolve_endpoint(config.source);
    if (endpoint.rfind("http://", 0) == 0)
      spdlog::warn("endpoint {} is plain http: traffic is not encrypted", endpoint);
    auto token = fetch::resolve_token(config.source);
    hub = std::make_unique<fetch::HubClient>(endpoint, token, config.fetch);
    downloader = std::make_unique<fetch::Downloader>(endpoint, token, config.fetch);
    auto pinned = ledger.source();
    if (pinned && pinned->repo == config.source.repo && pinned->revision == config.source.revision &&
        !ledger.files().empty()) {
      commit_sha = pinned->commit_sha;
      files = ledger.files();
      spdlog::info("source {}@{} pinned at {}: {} files (listing cached)", config.source.repo, config.source.revision,
                   commit_sha, files.size());
      return;
    }
    std::string sha = hub->resolve_revision(config.source.repo, config.source.revision);
    json selection = {{"include", config.source.include}, {"exclude", config.source.exclude}};
    auto record = ledger.pin_source({endpoint, config.source.repo, config.source.revision, sha, selection.dump()});
    commit_sha = record.commit_sha;
    std::vector<state::FileRecord> listed;
    for (const auto& f : hub->list_files(config.source.repo, commit_sha, config.source.include, config.source.exclude))
      listed.push_back({"", f.path, f.size, f.git_oid, f.sha256});
    ledger.upsert_files(config.source.repo, std::move(listed));
    files = ledger.files();
    spdlog::info("source {}@{} pinned at {}: {} files selected", config.source.repo, config.source.revision, commit_sha,
                 files.size());
    if (files.empty()) throw Error(ErrorKind::config, "source.include selects no file of " + config.source.repo);
  }

  void create_trainer() {
    TrainConfig train_config = config.train;
    if (train_config.threads == 0) {
      // The cores the decode workers do not use: OpenMP threads that share a
      // core with a busy decoder spin at barriers and lose their turn (a step
      // ran 6x slower with 2 threads than with 1 on a 2-core machine decoding).
      int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      train_config.threads = std::max(1, cores - config.decode.workers * config.decode.codec_threads);
    }
    trainer = train::Trainer::create(train_config, config.decode.frames, config.decode.size);
    if (!trainer->backend_note().empty()) spdlog::info("trainer: {}", trainer->backend_note());
    cache::PlanCursor cursor;
    auto checkpoints = ledger.checkpoints();
    if (!checkpoints.empty()) {
      const auto& latest = checkpoints.back();
      cursor = cache::PlanCursor::parse(trainer->load_checkpoint(latest.path));
      checkpoint_step = latest.step;
      checkpoint_cursor = cursor;
      trained_steps = trainer->steps_done();
      spdlog::info("resumed from checkpoint {} at step {} ({})", latest.path.string(), latest.step, cursor.to_string());
    }
    auto position = ledger.position();
    samples = position.samples;
    epoch = cursor.epoch;
    check_working_set();
    new_sequence(cursor);
    drop_checkpoints_over_keep();
    // Checkpoints write into a standing claim so that freeing space never waits for space.
    uint64_t bytes = checkpoint_file_bytes();
    spare_checkpoint_claim = reserve_at_start(bytes, "spare checkpoint");
    while (static_cast<int>(checkpoint_claims.size()) < config.train.keep_checkpoints)
      checkpoint_claims.emplace_back(fs::path(), reserve_at_start(bytes, "checkpoint"));
    // From here a claim larger than what the fixed working set leaves (a
    // member or a clip too large for this budget) fails at once, alone.
    // Kept downloads go when the space is needed, so they do not count.
    budget->set_standing(fixed_bytes);
  }

  // A kill between a checkpoint's ledger row and the rotation leaves one
  // checkpoint more than train.keep_checkpoints; the oldest go, so the
  // standing claims are the ones the working-set check counted (a soak run
  // sat in budget-wait beside three checkpoints with keep 2).
  void drop_checkpoints_over_keep() {
    while (static_cast<int>(checkpoint_claims.size()) > std::max(1, config.train.keep_checkpoints)) {
      auto oldest = std::move(checkpoint_claims.front());
      checkpoint_claims.erase(checkpoint_claims.begin());
      ledger.remove_checkpoint(oldest.first);
      fs::remove(oldest.first);
      spdlog::info("checkpoint {} removed: more than train.keep_checkpoints ({}) were kept by the last run",
                   oldest.first.string(), config.train.keep_checkpoints);
    }  // each claim goes after its unlink
  }

  // The working-set check has made sure that the standing claims fit once the
  // downloads kept from the last run are gone; they go one by one until they do.
  std::unique_ptr<SpaceClaim> reserve_at_start(uint64_t bytes, const std::string& what) {
    for (;;) {
      if (auto claim = budget->try_reserve(bytes, what)) return claim;
      std::lock_guard lock(prefetch_mutex);
      if (!give_back_kept_download(epoch)) return budget->reserve(bytes, what);
    }
  }

  // What the budget covers, as `du` would count it.
  uint64_t bytes_on_disk() const {
    const auto& st = config.storage;
    return disk_usage(st.cache_dir) + (st.state_dir == st.cache_dir ? 0 : disk_usage(st.state_dir));
  }

  // Downloads kept from a run with a larger budget can leave no room under this
  // one. They are the one thing on disk that can be fetched again, so they go
  // (recovery then rolls their files back) rather than kaiod refusing to start.
  bool drop_downloads_over_budget() {
    uint64_t on_disk = bytes_on_disk();
    if (on_disk + ledger_allowance(config) <= config.storage.budget) return false;
    bool dropped = false;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(download_dir, ec)) {
      spdlog::info(
          "download {} ({}) kept from the last run removed: {} on disk and {} for the ledger exceed storage.budget {}",
          entry.path().string(), format_size(disk_usage(entry.path())), format_size(on_disk),
          format_size(ledger_allowance(config)), format_size(config.storage.budget));
      dropped = fs::remove(entry.path(), ec) || dropped;
    }
    return dropped;
  }

  // The least the budget must hold for training to move: what stays for good
  // (files found at start, the ledger allowance, keep+1 checkpoints) and a chunk
  // of K clips with one window each. Below it the pipeline could only wait, so
  // start-up refuses with the parts named. Files that do not fit beside it are
  // decoded while they stream (download_limit).
  void check_working_set() {
    auto b = budget->status();
    // Downloads kept from the last run are on disk but go once decoded.
    uint64_t kept_downloads = std::min(b.baseline, disk_usage(download_dir));
    uint64_t held = b.baseline - kept_downloads + b.ledger_allowance;
    // Shards kept from the last run are trained first: they stand in for the
    // chunk. (Checkpoints kept from it fill the checkpoint slots.)
    uint64_t kept_shards = 0;
    for (const auto& [id, claim] : shard_claims) kept_shards += claim->bytes();
    int slots = config.train.keep_checkpoints + 1;
    uint64_t checkpoints = budget->on_disk_bytes(checkpoint_file_bytes()) * static_cast<uint64_t>(slots);
    uint64_t chunk = budget->on_disk_bytes(decode::shard_bytes(decode::from_config(config.decode), 1, 256)) *
                     static_cast<uint64_t>(std::max(1, config.train.shuffle_clips));
    fixed_bytes = held + checkpoints;
    standing_bytes = fixed_bytes + chunk;
    cache::check_budget_fits(
        config.storage.budget, standing_bytes + (kept_shards > chunk ? kept_shards - chunk : 0),
        format_size(held) + " already on disk and kept for the ledger, " + std::to_string(slots) + " checkpoints of " +
            format_size(checkpoint_file_bytes()) + ", and " + std::to_string(config.train.shuffle_clips) +
            " clips' shards (train.shuffle_clips)" +
            (kept_shards > chunk ? " (" + format_size(kept_shards) + " of shards kept from the last run)" : ""));
  }

  // Files up to this size are downloaded whole; larger ones are decoded while
  // they stream. Downloaded, a file and one member extracted from it must fit
  // beside the standing working set.
  uint64_t download_limit() {
    std::lock_guard lock(mutex);  // reload() changes the budget
    uint64_t threshold = config.storage.stream_threshold ? config.storage.stream_threshold : config.storage.budget / 4;
    uint64_t room = config.storage.budget > standing_bytes ? config.storage.budget - standing_bytes : 0;
    return std::min(threshold, room / 2);
  }

  // The most one clip's shard may hold: what the fixed working set leaves.
  uint64_t shard_limit() {
    std::lock_guard lock(mutex);  // reload() changes the budget
    return config.storage.budget > fixed_bytes ? config.storage.budget - fixed_bytes : 1;
  }

  uint64_t checkpoint_file_bytes() const { return trainer->checkpoint_bytes() + 256; }

  // A chunk closes once its shards reach a quarter of the room beside the
  // fixed working set, so that the chunk being formed, the clip being decoded,
  // its member and its download all fit: training, which alone frees shards,
  // never waits for a clip that waits for space. A function of the budget
  // only, so chunks are the same in every run with that budget.
  uint64_t chunk_bytes_cap() const {
    return config.storage.budget > fixed_bytes ? (config.storage.budget - fixed_bytes) / 4 : 1;
  }

  void new_sequence(const cache::PlanCursor& start) {
    sequence = std::make_unique<cache::WindowSequence>(
        config.train.seed, config.train.shuffle_clips, config.train.repeat, start,
        [this](int e, int64_t chunk, const std::vector<cache::ClipWindows>& clips) {
          retention.chunk_formed(e, chunk, clips);
        },
        chunk_bytes_cap());
  }

  // ---------- producer: files in plan order -> download -> decode -> clips ----------

  void wait_while_paused(std::stop_token st) {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return !paused || st.stop_requested(); });
  }

  // Caption files are read straight from the Hub into memory: they take no
  // disk, and one that cannot be read leaves its clips without captions.
  void load_caption_files() {
    if (config.source.captions.empty()) return;
    constexpr uint64_t kMaxCaptionFile = 512ull << 20;
    for (const auto& f : hub->list_files(config.source.repo, commit_sha, config.source.captions, {})) {
      try {
        if (f.size > kMaxCaptionFile)
          throw Error(ErrorKind::corrupt,
                      "larger than " + format_size(kMaxCaptionFile) + " (" + format_size(f.size) + ")");
        auto source = hub->open_stream(config.source.repo, commit_sha, f);
        std::string text;
        text.reserve(f.size);
        std::array<std::byte, 1 << 16> buf;
        while (size_t n = source->read(buf)) text.append(reinterpret_cast<const char*>(buf.data()), n);
        std::istringstream in(text);
        auto parsed = decode::parse_captions(in, f.path);
        captions.merge(std::move(parsed));
        spdlog::info("captions: {} read ({}), {} videos captioned in all", f.path, format_size(f.size),
                     captions.size());
      } catch (const Error& err) {
        if (err.kind() == ErrorKind::cancelled) throw;
        fail("captions " + f.path + " not used: " + err.what(), err.kind());
      }
    }
  }

  void produce(std::stop_token st) {
    try {
      load_caption_files();
      while (!st.stop_requested()) {
        int e;
        {
          std::lock_guard lock(mutex);
          e = epoch;
        }
        produce_epoch(e, st);
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return st.stop_requested() || done || epoch != e; });
        if (done) return;
      }
    } catch (const Error& err) {
      if (err.kind() != ErrorKind::cancelled) stop_on_error("producer stopped: " + std::string(err.what()), err.kind());
    } catch (const std::exception& err) {
      stop_on_error("producer stopped by an internal error: " + std::string(err.what()));
    }
    changed.notify_all();
  }

  void produce_epoch(int e, std::stop_token st) {
    auto order = cache::file_order(config.train.seed, e, files.size());
    std::vector<size_t> fed;
    {
      std::lock_guard lock(mutex);
      fed = cache::feed_decoded_files(ledger, e, order, *sequence);
    }
    changed.notify_all();
    std::set<size_t> skip(fed.begin(), fed.end());
    for (size_t pos = 0; pos < order.size() && !st.stop_requested(); ++pos) {
      if (skip.count(pos)) continue;
      wait_while_paused(st);
      const auto& file = files[order[pos]];
      auto status = ledger.file_status(file.id, e);
      prefetch_ahead(order, pos, e, skip);
      if (!(status && status->state == state::FileState::failed)) process_file(file, pos, e, st);
      {
        std::lock_guard lock(mutex);
        sequence->file_complete(pos);
      }
      changed.notify_all();
    }
    drop_prefetches(e);
    if (st.stop_requested()) return;
    {
      std::lock_guard lock(mutex);
      sequence->finish_epoch();
    }
    changed.notify_all();
  }

  std::unique_ptr<ByteSource> fetch_file(const state::FileRecord& file, size_t pos, int e, std::stop_token st,
                                         std::unique_ptr<SpaceClaim>& claim, fs::path& local) {
    fetch::RepoFile repo_file{file.path, file.size, file.git_oid, file.sha256};
    local = download_dir / file.id;
    if (auto ahead = take_prefetch(pos)) {
      claim = std::move(ahead->claim);
      return finish_download(file, e, ahead->done, st);
    }
    fs::path part = local;
    part += ".part";
    uint64_t threshold = download_limit();
    {
      std::lock_guard kept_lock(prefetch_mutex);  // against give_back_kept_download
      kept_downloads.erase(local);
      kept_downloads.erase(part);
      if (file.size > threshold) {
        // Kept by a run whose budget let it download whole: no longer fits.
        for (const auto& kept : {local, part})
          if (fs::exists(kept)) discard_kept(kept);
      } else if (fs::exists(local)) {
        // The downloader renames to `local` only after checking size and hash, so
        // this was verified before a restart (a prefetch, or a crash before the
        // ledger heard of it); recovery kept it.
        claim = budget->adopt_existing(local);
        ledger.set_file_state(file.id, e, state::FileState::downloaded);
        return std::make_unique<decode::FileSource>(local);
      } else if (fs::exists(part)) {
        // Bytes kept from before a restart are already on disk: they join this
        // download's claim instead of being reserved a second time.
        claim = budget->adopt_existing(part);
      }
    }
    if (file.size > threshold) {
      local.clear();
      spdlog::info("streaming {} ({}) through decode: larger than {}", file.path, format_size(file.size),
                   format_size(threshold));
      return hub->open_stream(config.source.repo, commit_sha, repo_file);
    }
    if (claim)
      claim->resize(file.size);
    else
      claim = budget->reserve(file.size, "download " + file.path);
    return finish_download(file, e, submit_download(file, e, local), st);
  }

  std::shared_future<fetch::DownloadResult> submit_download(const state::FileRecord& file, int e,
                                                            const fs::path& local) {
    ledger.set_file_local_path(file.id, e, local);
    ledger.set_file_state(file.id, e, state::FileState::downloading);
    auto result = std::make_shared<std::promise<fetch::DownloadResult>>();
    std::shared_future<fetch::DownloadResult> done = result->get_future().share();
    downloader->submit({config.source.repo, commit_sha, {file.path, file.size, file.git_oid, file.sha256}, local},
                       [result](const fetch::DownloadResult& r) { result->set_value(r); });
    return done;
  }

  std::unique_ptr<ByteSource> finish_download(const state::FileRecord& file, int e,
                                              std::shared_future<fetch::DownloadResult> done, std::stop_token st) {
    while (done.wait_for(std::chrono::milliseconds(200)) != std::future_status::ready)
      if (st.stop_requested()) {
        downloader->stop();  // keeps the .part for the next run
        done.wait();
        throw Error(ErrorKind::cancelled, "stopping");
      }
    const auto& r = done.get();
    if (!r.ok) throw Error(r.kind, r.message);
    ledger.set_file_state(file.id, e, state::FileState::downloaded);
    ledger.add_counter("bytes_downloaded", static_cast<int64_t>(file.size));
    return std::make_unique<decode::FileSource>(r.job.dest);
  }

  // Starts downloads of the files after `pos` in plan order while they fit, up
  // to fetch.parallel_files of them, so the network works while this file is
  // decoded. They only take space that is free now and leaves download_limit()
  // for the file being decoded; when decoding still runs short, the trainer
  // gives the newest back (evict_prefetch). Files with a .part from an earlier
  // run are left to fetch_file, which resumes them.
  void prefetch_ahead(const std::vector<size_t>& order, size_t pos, int e, const std::set<size_t>& skip) {
    size_t depth;
    {
      std::lock_guard lock(mutex);  // reload() changes it
      depth = static_cast<size_t>(std::max(0, config.fetch.parallel_files));
    }
    uint64_t limit = download_limit();
    std::lock_guard lock(prefetch_mutex);
    size_t next = prefetched.empty() ? pos + 1 : prefetched.back().pos + 1;
    for (; next < order.size() && prefetched.size() < depth; ++next) {
      if (paused_now()) return;
      if (skip.count(next)) continue;
      const auto& file = files[order[next]];
      if (file.size > limit) continue;  // streamed when its turn comes
      auto status = ledger.file_status(file.id, e);
      if (status && status->state != state::FileState::pending) continue;
      fs::path local = download_dir / file.id;
      if (fs::exists(local) || fs::exists(local.string() + ".part")) continue;
      auto claim = budget->try_reserve(file.size + limit, "prefetch " + file.path);
      if (!claim) return;  // in plan order: a later file does not jump the queue
      claim->resize(file.size);
      Prefetch p{next, e, &file, local, std::move(claim), nullptr, {}};
      p.done = submit_download(file, e, local);
      prefetched.push_back(std::move(p));
    }
  }

  std::optional<Prefetch> take_prefetch(size_t pos) {
    std::lock_guard lock(prefetch_mutex);
    while (!prefetched.empty() && prefetched.front().pos < pos) prefetched.pop_front();  // skipped since
    if (prefetched.empty() || prefetched.front().pos != pos) return std::nullopt;
    Prefetch p = std::move(prefetched.front());
    prefetched.pop_front();
    return p;
  }

  // Gives back the newest prefetched download: its .part or file is removed
  // and the file is downloaded again when its turn comes. Returns false when
  // there is none.
  bool evict_prefetch(int e) {
    std::unique_lock lock(prefetch_mutex);
    if (prefetched.empty()) return give_back_kept_download(e);
    Prefetch p = std::move(prefetched.back());
    prefetched.pop_back();
    lock.unlock();
    downloader->cancel(p.local);
    p.done.wait();
    std::error_code ec;
    fs::remove(p.local, ec);
    fs::remove(p.local.string() + ".part", ec);
    p.claim.reset();  // after the unlink
    ledger.set_file_state(p.file->id, p.epoch, state::FileState::pending);
    spdlog::info("prefetch of {} given back ({}): decoding needs the space", p.file->path, format_size(p.file->size));
    return true;
  }

  // A download that a killed run had started or finished ahead of its turn is
  // kept on disk for its file, outside any prefetch claim. When the working set
  // needs the space (the last run may have had more room, before a checkpoint
  // or a kept shard took it) it is given back like a prefetch. fetch_file takes
  // its file's own out of the set first. Called with prefetch_mutex held.
  bool give_back_kept_download(int e) {
    if (kept_downloads.empty()) return false;
    fs::path kept = *kept_downloads.begin();
    uint64_t bytes = discard_kept(kept);
    std::string id = kept.stem().string();  // "<id>" of "<id>" or "<id>.part"
    // The download belongs to whichever of this epoch and the next has its
    // file in flight; a file decoded (or failed) in an epoch stays so.
    for (int ep : {e, e + 1}) {
      auto status = ledger.file_status(id, ep);
      if (status && (status->state == state::FileState::downloading || status->state == state::FileState::downloaded))
        ledger.set_file_state(id, ep, state::FileState::pending);
    }
    spdlog::info("download {} kept from the last run given back ({}): the working set needs the space", kept.string(),
                 format_size(bytes));
    return true;
  }

  // Removes a file kept on disk from the last run; its bytes leave the budget's
  // baseline once it is unlinked. Called with prefetch_mutex held.
  uint64_t discard_kept(const fs::path& file) {
    kept_downloads.erase(file);
    auto claim = budget->adopt_existing(file);
    uint64_t bytes = claim->bytes();
    std::error_code ec;
    fs::remove(file, ec);
    return bytes;  // the claim goes after the unlink
  }

  // At an epoch's end: prefetches of its files are not needed any more.
  // Downloads kept from the last run may be the next epoch's: they stay.
  void drop_prefetches(int e) {
    while (true) {
      {
        std::lock_guard lock(prefetch_mutex);
        if (prefetched.empty()) return;
      }
      evict_prefetch(e);
    }
  }

  bool paused_now() {
    std::lock_guard lock(mutex);
    return paused;
  }

  // A full filesystem (ENOSPC below the budget: something else filled it) is
  // not the file's fault: its download and shards are given back, kaiod shows
  // disk-full, waits for space and does the file again. Clips it already
  // delivered stay planned once (on_clip).
  void process_file(const state::FileRecord& file, size_t pos, int e, std::stop_token st) {
    while (!try_file(file, pos, e, st)) wait_for_disk_space(st);
  }

  bool try_file(const state::FileRecord& file, size_t pos, int e, std::stop_token st) {
    std::unique_ptr<SpaceClaim> download_claim;
    fs::path local;
    bool done = true;
    try {
      auto source = fetch_file(file, pos, e, st, download_claim, local);
      ledger.set_file_state(file.id, e, state::FileState::extracting);
      DecodeConfig decode_config;
      {
        std::lock_guard lock(mutex);  // reload() changes the workers
        decode_config = config.decode;
      }
      decode::ArchiveDecoder decoder(decode_config, work_dir, *budget);
      decoder.skip_planned([&](const std::string& member) { return pinned_in_plan(file, member, e); });
      // A shard that outgrows what the budget can ever leave it fails alone.
      decoder.set_shard_limits({shard_limit(), std::chrono::seconds(10)});
      decoder.run(
          std::move(source), file.path, captions.size() ? &captions : nullptr,
          [&](decode::ClipResult r) { on_clip(file, pos, std::move(r), st); }, st);
      ledger.set_file_state(file.id, e, state::FileState::decoded);
      spdlog::info("decoded {} ({})", file.path, format_size(file.size));
    } catch (const Error& err) {
      if (err.kind() == ErrorKind::cancelled) throw;
      if (err.kind() == ErrorKind::budget) throw;  // cannot ever fit: the operator must act
      if (err.kind() == ErrorKind::disk_full) {
        disk_full("file " + file.path + ": " + err.what());
        // Done again from the start; members already planned are skipped.
        ledger.set_file_state(file.id, e, state::FileState::pending, "disk full; retried once space returns");
        done = false;
      } else {
        ledger.set_file_state(file.id, e, state::FileState::failed, err.what());
        fail("file " + printable(file.path) + " failed: " + printable(err.what()), err.kind());
      }
    }
    if (!local.empty()) {
      fs::remove(local.string() + ".part");  // a failed download's bytes leave with its claim
      fs::remove(local);                     // unlink first, then give the bytes back
      download_claim.reset();
    }
    return done;
  }

  void disk_full(const std::string& what) {
    std::lock_guard lock(mutex);
    disk_full_reason = redact(what);
    last_error = disk_full_reason;
    ++errors_total[std::string(to_string(ErrorKind::disk_full))];
    spdlog::error("disk full: {}; waiting for space on {}", disk_full_reason, config.storage.cache_dir.string());
  }

  // Polls until the filesystems keep storage.free_disk_floor plus a margin free.
  void wait_for_disk_space(std::stop_token st) {
    constexpr uint64_t kMargin = 1u << 20;
    auto free_on = [](const fs::path& p) {
      std::error_code ec;
      auto info = fs::space(p, ec);
      return ec ? 0 : static_cast<uint64_t>(info.available);
    };
    while (!st.stop_requested()) {
      uint64_t free = std::min(free_on(config.storage.cache_dir), free_on(config.storage.state_dir));
      if (free >= config.storage.free_disk_floor + kMargin) break;
      std::unique_lock lock(mutex);
      changed.wait_for(lock, std::chrono::seconds(1));
    }
    if (st.stop_requested()) throw Error(ErrorKind::cancelled, "stopping");
    std::lock_guard lock(mutex);
    spdlog::info("disk space is back on {}: going on", config.storage.cache_dir.string());
    disk_full_reason.clear();
  }

  // True when the member's clip is in this epoch's plan already: delivered in
  // this process (a retry after disk full), or pinned in the ledger by an
  // earlier run (trained and deleted, or its shard still on disk). Such a
  // member is not decoded again, so its windows never change with a decode's
  // outcome (a timeout under load, say).
  bool pinned_in_plan(const state::FileRecord& file, const std::string& member, int e) {
    auto id = state::clip_id(config.source.repo, file.path, member);
    {
      std::lock_guard lock(mutex);
      if (planned.count(id)) return true;
    }
    auto known = ledger.clip(id);
    if (!known || known->state == state::ClipState::failed || known->windows <= 0 || !cache::planned_in(*known, e))
      return false;
    if (known->state == state::ClipState::committed || known->state == state::ClipState::deleted) return true;
    std::lock_guard lock(mutex);
    return shard_paths.count(id) > 0;
  }

  void on_clip(const state::FileRecord& file, size_t pos, decode::ClipResult r, std::stop_token st) {
    wait_while_paused(st);
    auto id = state::clip_id(config.source.repo, file.path, r.member);
    if (r.planned) {
      std::lock_guard lock(mutex);
      if (planned.count(id)) return;  // delivered before this retry of its file
      auto known = ledger.clip(id);
      if (!known)
        throw Error(ErrorKind::internal, "clip " + id + " of " + file.path + " is planned but not in the ledger");
      sequence->add_clip({id, known->windows, pos, known->shard_bytes});
      planned.insert(id);
      return;
    }
    state::ClipRecord rec;
    rec.file_id = file.id;
    rec.repo_path = file.path;
    rec.member = r.member;
    rec.member_index = r.index;
    rec.caption = r.caption;
    rec.windows = r.windows;
    rec.shard_path = r.shard;
    rec.shard_bytes = r.shard_bytes;
    rec.id = id;
    if (!r.error.empty() || r.windows == 0) {
      rec.state = state::ClipState::failed;
      rec.reason = r.error.empty() ? "no windows" : r.error;
      ledger.add_clips(config.source.repo, {rec});
      if (!r.error.empty()) {
        std::lock_guard lock(mutex);
        ++errors_total[std::string(to_string(ErrorKind::corrupt))];
      }
      spdlog::warn("clip {} in {} skipped: {}", printable(r.member), printable(file.path), printable(rec.reason));
      return;
    }
    ledger.add_clips(config.source.repo, {rec});
    ledger.add_counter("clips_decoded", 1);
    {
      std::lock_guard lock(mutex);
      shard_claims[rec.id] = std::move(r.claim);
      shard_paths[rec.id] = r.shard;
      sequence->add_clip({rec.id, rec.windows, pos, rec.shard_bytes});
      planned.insert(rec.id);
      decoded_clips += 1;
    }
    changed.notify_all();
  }

  // Windows left in the epoch over the recent training rate. Files not yet
  // decoded are taken to hold as many windows as the average file so far.
  // -1 while nothing is known or nothing trains. Called with `mutex` held.
  double epoch_eta_seconds(double windows_per_second) const {
    if (done) return 0;
    if (windows_per_second <= 0 || !sequence) return -1;
    auto p = sequence->progress();
    if (p.files_complete == 0) return -1;
    int64_t files_left = std::max<int64_t>(0, static_cast<int64_t>(files.size()) - p.files_complete);
    double per_file = static_cast<double>(p.windows_added) / static_cast<double>(p.files_complete);
    return (static_cast<double>(p.windows_left) + per_file * static_cast<double>(files_left)) / windows_per_second;
  }

  // ---------- trainer: windows in plan order -> steps -> checkpoints -> deletion ----------

  bool limits_reached() const { return config.train.max_steps > 0 && trainer->steps_done() >= config.train.max_steps; }

  // Fills `batch` in plan order. True when it is complete: full, at the end
  // of a chunk, or at the end of the epoch (then possibly empty). False when a
  // pause, a stop or a failure came first: the windows taken stay held.
  bool fill_batch(std::stop_token st, double& waited) {
    auto start = Clock::now();
    std::unique_lock lock(mutex);
    bool complete = false;
    while (!st.stop_requested() && !paused && !failed) {
      if (batch.empty()) batch_cursor = sequence->cursor();
      if (auto w = sequence->next()) {
        batch.push_back(*w);
        // A batch never spans chunks: the step that ends a chunk can be followed
        // by the checkpoint that frees its shards, which the next chunk's clips
        // may need the space of (waiting for them with a part-filled batch
        // deadlocked). It also keeps batches a pure function of the plan.
        if (static_cast<int>(batch.size()) >= config.train.batch_size || sequence->current_chunk().empty()) {
          complete = true;
          break;
        }
        continue;
      }
      if (sequence->epoch_done()) {
        complete = true;
        break;
      }
      int e = epoch;
      lock.unlock();
      auto b = budget->status();
      check_waiter_can_fit(b);
      if (b.waiting > 0) evict_prefetch(e);
      lock.lock();
      if (failed) break;
      changed.wait_for(lock, std::chrono::milliseconds(100));
    }
    waited = std::chrono::duration<double>(Clock::now() - start).count();
    return complete;
  }

  // Where a restart must go on from: before the held batch, if any.
  cache::PlanCursor resume_cursor() {
    std::lock_guard lock(mutex);
    return batch.empty() ? sequence->cursor() : batch_cursor;
  }

  // A reservation larger than what the fixed working set leaves free would
  // wait forever (reserve() refuses those at once; this catches one that
  // waited from before a reload lowered the budget): stop with the sizes
  // instead of sitting in budget-wait.
  void check_waiter_can_fit(const cache::BudgetStatus& b) {
    if (b.waiting == 0 || b.oldest_waiting_bytes + fixed_bytes <= b.budget) return;
    std::string what = b.oldest_waiting_what;
    cache::check_budget_fits(b.budget, b.oldest_waiting_bytes + fixed_bytes,
                             what + " (" + format_size(b.oldest_waiting_bytes) + ") beside the fixed working set of " +
                                 format_size(fixed_bytes));
  }

  void train_loop(std::stop_token st) {
    size_t window_bytes = static_cast<size_t>(config.decode.frames) * config.decode.size * config.decode.size * 3;
    std::vector<uint8_t> batch_bytes(window_bytes * static_cast<size_t>(config.train.batch_size));
    int64_t since_checkpoint = 0;
    try {
      while (!st.stop_requested() && !failed_now()) {
        if (limits_reached()) {  // also when resumed at train.max_steps
          finish();
          break;
        }
        if (check_pause()) continue;
        double waited = 0;
        if (!fill_batch(st, waited)) continue;  // paused, stopping or failed: the batch is held
        if (batch.empty()) {
          if (finish_epoch()) break;
          continue;
        }
        trainer->note_data_wait(waited);
        for (size_t i = 0; i < batch.size(); ++i) {
          auto& reader = shard_readers[batch[i].clip];
          if (!reader) {
            std::lock_guard lock(mutex);
            reader = std::make_unique<decode::ShardReader>(shard_paths.at(batch[i].clip));
          }
          std::memcpy(batch_bytes.data() + i * window_bytes, reader->window(static_cast<int>(batch[i].window)),
                      window_bytes);
        }
        auto result = trainer->step(batch_bytes.data(), static_cast<int>(batch.size()));
        int64_t step = trainer->steps_done();
        {
          std::lock_guard lock(mutex);
          trained_steps = step;
          data_wait_fraction = trainer->data_wait_fraction();
          last_loss = result.loss;
          samples += static_cast<int64_t>(batch.size());
          train_rate.sample(static_cast<double>(samples));
        }
        if (observer) {
          for (const auto& w : batch) observer->on_window(epoch, step, w.clip, static_cast<int>(w.window));
          observer->on_step(step, result.loss);
        }
        batch.clear();
        ++since_checkpoint;
        if (since_checkpoint >= config.train.checkpoint_every || early_checkpoint_needed() || limits_reached()) {
          checkpoint();
          since_checkpoint = 0;
        }
      }
      if (st.stop_requested()) checkpoint();
    } catch (const Error& err) {
      if (err.kind() != ErrorKind::cancelled) stop_on_error("trainer stopped: " + std::string(err.what()), err.kind());
    } catch (const std::exception& err) {
      stop_on_error("trainer stopped by an internal error: " + std::string(err.what()));
    }
    changed.notify_all();
  }

  bool failed_now() {
    std::lock_guard lock(mutex);
    return failed;
  }

  // A stage that cannot go on stops the whole run cleanly, with the reason in
  // status.last_error, rather than letting an exception end the process.
  void stop_on_error(const std::string& message, ErrorKind kind = ErrorKind::internal) {
    fail(message, kind);
    std::lock_guard lock(mutex);
    failed = true;
  }

  // Training stops at a step boundary; the pause is acknowledged once a checkpoint is durable.
  bool check_pause() {
    std::unique_lock lock(mutex);
    if (!paused) return false;
    if (!pause_acknowledged) {
      lock.unlock();
      checkpoint();
      lock.lock();
      pause_acknowledged = true;
      changed.notify_all();
    }
    changed.wait_for(lock, std::chrono::milliseconds(200));
    return true;
  }

  bool early_checkpoint_needed() {
    auto status = budget->status();
    if (status.waiting == 0) return false;
    uint64_t freeable = retention.freeable_bytes(resume_cursor(), *budget);
    return cache::should_checkpoint_early(status, status.oldest_waiting_bytes, freeable);
  }

  // Rows of clips the checkpoint covered shrink to what exactly-once needs,
  // so the ledger stays inside its allowance. Outside any ledger transaction.
  void compact_ledger() {
    try {
      auto compacted = ledger.compact_after_checkpoint();
      if (compacted.bytes_peak > ledger_allowance(config))
        spdlog::warn("ledger: {} on disk, over its allowance of {}", format_size(compacted.bytes_peak),
                     format_size(ledger_allowance(config)));
    } catch (const Error& err) {  // the next checkpoint tries again
      spdlog::warn("ledger: compaction after the checkpoint failed: {}", err.what());
    }
  }

  // The new checkpoint takes the spare slot; the oldest file goes and its slot
  // becomes the spare. Called with `mutex` held.
  void rotate_checkpoints(const fs::path& written) {
    checkpoint_claims.emplace_back(written, std::move(spare_checkpoint_claim));
    auto oldest = std::move(checkpoint_claims.front());
    checkpoint_claims.erase(checkpoint_claims.begin());
    if (!oldest.first.empty() && oldest.first != written) {
      ledger.remove_checkpoint(oldest.first);
      fs::remove(oldest.first);
    }
    spare_checkpoint_claim = std::move(oldest.second);
  }

  // Writes a checkpoint of the current step and resume_cursor(), then deletes
  // what it covers. A second call at the same step and position does nothing;
  // at the same step with a later position (an epoch's end) the file is
  // replaced in place, so the rotation never removes the file just written.
  void checkpoint() {
    cache::PlanCursor cursor = resume_cursor();
    int64_t step = trainer->steps_done();
    bool same_step = step == checkpoint_step;
    if (same_step && cursor == checkpoint_cursor) return;
    fs::path path = checkpoint_dir / ("step-" + std::to_string(step) + ".kaiockpt");
    std::string extra = cursor.to_string();
    if (trainer->checkpoint_bytes() + extra.size() > checkpoint_file_bytes())
      throw Error(ErrorKind::internal, "checkpoint larger than its claim");
    while (true) {
      try {
        trainer->save_checkpoint(path, extra);
        ledger.transaction([&] {
          ledger.add_checkpoint(
              {step, path, trainer->checkpoint_bytes() + extra.size(), static_cast<int64_t>(::time(nullptr)), extra});
          ledger.save_position({cursor.epoch, step, samples, extra});
        });
        break;
      } catch (const Error& err) {
        if (err.kind() != ErrorKind::disk_full) throw;
        fs::remove(path);
        disk_full("checkpoint " + path.string() + ": " + err.what());
        wait_for_disk_space(stop.get_token());
      }
    }
    {
      std::lock_guard lock(mutex);
      if (!same_step) rotate_checkpoints(path);
      checkpoint_step = step;
      checkpoint_cursor = cursor;
    }
    auto released = retention.release_after_checkpoint(cursor);
    compact_ledger();
    {
      std::lock_guard lock(mutex);
      for (const auto& id : released.clips) {
        shard_readers.erase(id);  // unmapped: a deleted shard holds no space
        shard_claims.erase(id);   // the shard is already unlinked
        shard_paths.erase(id);
      }
    }
    spdlog::info("checkpoint step {} durable ({}), loss {:.4f}, {} clips deleted ({})", step, cursor.to_string(),
                 last_loss, released.clips.size(), format_size(released.shard_bytes));
    changed.notify_all();
  }

  // Returns true when training is over.
  bool finish_epoch() {
    int next;
    {
      std::lock_guard lock(mutex);
      next = epoch + 1;
    }
    if (next >= config.train.epochs) {
      finish();
      return true;
    }
    checkpoint();
    {
      std::lock_guard lock(mutex);
      epoch = next;
      new_sequence(cache::PlanCursor{next, 0, 0, 0, 0, 0, 0});
      planned.clear();
    }
    spdlog::info("epoch {} starts", next);
    changed.notify_all();
    return false;
  }

  void finish() {
    checkpoint();
    std::lock_guard lock(mutex);
    done = true;
    spdlog::info("training done: step {}, loss {:.4f}", trainer->steps_done(), last_loss);
    changed.notify_all();
  }
};

Engine::Engine(Config config, WindowObserver* observer) : impl_(std::make_unique<Impl>(std::move(config), observer)) {
  auto& m = *impl_;
  m.recover_and_budget();
  auto pause = m.ledger.pause_state();
  m.paused = pause.paused;
  m.pause_reason = pause.reason;
  m.pin_and_list();
  m.create_trainer();
}

Engine::~Engine() {
  stop();
}

void Engine::start() {
  auto& m = *impl_;
  if (m.paused) m.downloader->pause();
  m.producer = std::thread([&m] { m.produce(m.stop.get_token()); });
  m.trainer_thread = std::thread([&m] { m.train_loop(m.stop.get_token()); });
}

void Engine::stop() {
  auto& m = *impl_;
  if (!m.producer.joinable() && !m.trainer_thread.joinable()) return;
  m.stop.request_stop();
  m.changed.notify_all();
  if (m.trainer_thread.joinable()) m.trainer_thread.join();  // writes the last checkpoint
  m.hub->cancel();
  m.downloader->stop();
  m.budget->cancel();
  if (m.producer.joinable()) m.producer.join();
}

bool Engine::finished() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->done || impl_->failed;
}

void Engine::reload(const Config& changed) {
  auto& m = *impl_;
  cache::check_budget_fits(changed.storage.budget, m.standing_bytes, "the working set");
  std::lock_guard lock(m.mutex);
  auto& c = m.config;
  uint64_t in_use = m.budget->status().total;
  if (changed.storage.budget < in_use)
    spdlog::warn("reload: storage.budget {} is below the {} in use: no new work starts until enough is released",
                 format_size(changed.storage.budget), format_size(in_use));
  m.budget->set_budget(changed.storage.budget);
  m.downloader->set_limits(changed.fetch.parallel_files, changed.fetch.bandwidth_limit);
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
  m.changed.notify_all();
}

ServiceStatus Engine::status() {
  auto& m = *impl_;
  ServiceStatus s;
  auto b = m.budget->status();
  auto progress = m.downloader ? m.downloader->progress() : fetch::Progress{};
  auto net = m.downloader ? m.downloader->network_status() : fetch::NetworkStatus{};
  auto hub_net = m.hub ? m.hub->network_status() : fetch::NetworkStatus{};
  if (hub_net.state != fetch::NetworkStatus::State::ok) net = hub_net;
  std::lock_guard lock(m.mutex);
  s.repo = m.config.source.repo;
  s.revision = m.commit_sha;
  s.paused = m.paused;
  s.pause_reason = m.pause_reason;
  s.budget_bytes = m.config.storage.budget;
  s.disk_bytes = m.bytes_on_disk();
  s.reserved_bytes = b.total;
  s.peak_reserved_bytes = b.peak_total;
  auto fc = m.ledger.file_counts(m.epoch);
  s.files.total = static_cast<int64_t>(m.files.size());
  s.files.done = fc[state::FileState::decoded] + fc[state::FileState::done];
  s.files.failed = fc[state::FileState::failed];
  s.files.active = fc[state::FileState::downloading] + fc[state::FileState::extracting];
  auto cc = m.ledger.clip_counts();
  s.clips.ready = cc[state::ClipState::ready];
  s.clips.consumed = cc[state::ClipState::consumed] + cc[state::ClipState::committed];
  s.clips.failed = cc[state::ClipState::failed];
  s.clips.deleted = cc[state::ClipState::deleted];
  s.train.epoch = m.epoch;
  s.train.step = m.trained_steps;
  s.train.samples = m.samples;
  s.train.loss = m.last_loss;
  s.train.backend = m.trainer ? m.trainer->backend() : "";
  s.train.wait_fraction = m.data_wait_fraction;
  s.train.checkpoint_step = m.checkpoint_step;
  m.download_rate.sample(static_cast<double>(progress.done));
  m.decode_rate.sample(m.decoded_clips);
  s.rates.download_bps = m.download_rate.per_second();
  s.rates.decode_clips_per_s = m.decode_rate.per_second();
  s.rates.train_samples_per_s = m.paused ? 0 : m.train_rate.per_second();
  s.rates.download_bps = m.paused ? 0 : s.rates.download_bps;
  s.rates.decode_clips_per_s = m.paused ? 0 : s.rates.decode_clips_per_s;
  s.epoch_eta_seconds = m.epoch_eta_seconds(s.rates.train_samples_per_s);
  s.last_error = m.last_error;
  s.download_bytes_total = progress.done;
  s.errors_total = m.errors_total;
  if (m.failed) {
    s.state = "error";
    s.state_detail = m.last_error;
  } else if (m.done) {
    s.state = "done";
  } else if (m.paused) {
    s.state = "paused";
  } else if (!m.disk_full_reason.empty()) {
    s.state = "disk-full";
    s.state_detail = m.disk_full_reason;
  } else if (net.state == fetch::NetworkStatus::State::auth_required) {
    s.state = "auth-required";
    s.state_detail = net.reason;
  } else if (net.state == fetch::NetworkStatus::State::waiting_network) {
    s.state = "waiting-network";
    auto t = std::chrono::system_clock::to_time_t(net.next_retry);
    char when[32];
    std::strftime(when, sizeof when, "%H:%M:%S", std::localtime(&t));
    s.state_detail = net.reason + ", next try at " + when;
  } else if (b.waiting > 0 && b.floor_reached) {
    s.state = "disk-full";
    s.state_detail = "less than storage.free_disk_floor (" + format_size(m.config.storage.free_disk_floor) +
                     ") free on " + m.config.storage.cache_dir.string() + "; " + b.oldest_waiting_what + " (" +
                     format_size(b.oldest_waiting_bytes) + ") waits";
  } else if (b.waiting > 0) {
    s.state = "budget-wait";
    s.state_detail = b.oldest_waiting_what + " (" + format_size(b.oldest_waiting_bytes) + ")";
  } else {
    s.state = "running";
  }
  return s;
}

json Engine::handle_control(const std::string& cmd, const json& given_args, const Peer& peer) {
  auto& m = *impl_;
  const json args = given_args.is_object() ? given_args : json::object();
  if (cmd == "status") return to_json(status());
  if (cmd == "ls") {
    std::optional<state::ClipState> clip_filter;
    std::optional<state::FileState> file_filter;
    std::string wanted = args.value("state", "");
    json out = {{"files", json::array()}, {"clips", json::array()}};
    bool files_ok = true, clips_ok = true;
    if (!wanted.empty()) {
      try {
        file_filter = state::parse_file_state(wanted);
      } catch (const Error&) {
        files_ok = false;
      }
      try {
        clip_filter = state::parse_clip_state(wanted);
      } catch (const Error&) {
        clips_ok = false;
      }
      if (!files_ok && !clips_ok) throw Error(ErrorKind::usage, "unknown state \"" + wanted + "\"");
    }
    int e;
    {
      std::lock_guard lock(m.mutex);
      e = m.epoch;
    }
    if (files_ok)
      for (const auto& f : m.ledger.list_files(e, file_filter))
        out["files"].push_back({{"name", f.file.path},
                                {"state", state::to_string(f.state)},
                                {"reason", f.reason},
                                {"size", f.file.size},
                                {"attempts", f.attempts}});
    if (clips_ok)
      for (const auto& c : m.ledger.list_clips(clip_filter, 1000))
        out["clips"].push_back({{"name", c.repo_path + ":" + c.member},
                                {"state", state::to_string(c.state)},
                                {"reason", c.reason},
                                {"windows", c.windows}});
    return out;
  }
  if (cmd == "pause" || cmd == "resume") {
    if (!peer.admin)
      throw Error(ErrorKind::usage,
                  cmd + " needs root, the daemon's user or a member of group " + m.config.control.admin_group);
    bool pausing = cmd == "pause";
    std::string reason = args.value("reason", std::string(pausing ? "paused by uid " + std::to_string(peer.uid) : ""));
    spdlog::info("control: {} by uid {} pid {}{}", cmd, peer.uid, peer.pid, reason.empty() ? "" : ": " + reason);
    m.ledger.set_paused(pausing, reason);
    pausing ? m.downloader->pause() : m.downloader->resume();
    std::unique_lock lock(m.mutex);
    m.paused = pausing;
    m.pause_reason = pausing ? reason : "";
    m.pause_acknowledged = false;
    m.changed.notify_all();
    if (pausing && m.trainer_thread.joinable() && !m.done && !m.failed) {
      bool ok = m.changed.wait_for(lock, std::chrono::seconds(60),
                                   [&] { return m.pause_acknowledged || m.done || m.failed; });
      if (!ok)
        throw Error(ErrorKind::transient, "pause stored, but the trainer did not reach a step boundary within 60 s");
    }
    return {{"paused", pausing}, {"message", m.pause_reason}};
  }
  throw Error(ErrorKind::usage, "unknown command \"" + cmd + "\" (status, ls, pause, resume)");
}

}  // namespace kaio::daemon
