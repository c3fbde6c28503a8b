// A data-parallel job of two kaiod ranks under `mpirun -np 2` on loopback,
// against kaio-hub: every window is trained once across the ranks, each
// rank stays under its own storage.budget (sampled every 20 ms), the ranks
// step with the same loss, and the job ends by itself with exit 0. Also with
// an odd number of files, where one rank runs out first, and with a Hub
// outage that only one rank sees (each rank then has its own kaio-hub), and
// on data where its loss curve is that of one kaiod with the global batch.
#include <cmath>
#include <functional>
#include <regex>
#include <string_view>

#include "tests/reliability/harness.h"

namespace kaio::reliability {
namespace {

// Every rank's paths from one config: {rank} in them (docs/multi-rank.md).
fs::path rank_dir(const DaemonSetup& s, int rank) {
  return s.dir / ("rank" + std::to_string(rank));
}

fs::path rank_socket(const DaemonSetup& s, int rank) {
  return rank_dir(s, rank) / "kaiod.sock";
}

// The job's config at `file`, against the Hub at `endpoint`.
void write_job_config(const DaemonSetup& s, const std::string& endpoint, const fs::path& file) {
  s.write_config();
  json c = json::parse(read_text(s.config_file()));
  c["source"]["endpoint"] = endpoint;
  c["storage"]["cache_dir"] = (s.dir / "rank{rank}" / "cache").string();
  c["storage"]["state_dir"] = (s.dir / "rank{rank}" / "state").string();
  c["control"]["socket"] = (s.dir / "rank{rank}" / "kaiod.sock").string();
  std::ofstream(file) << c.dump(2);
}

// The mpirun command line: every rank on one config (against s.endpoint), or,
// given one endpoint per rank, each rank on its own config (an MPMD job:
// "-np 1 kaiod --config A : -np 1 kaiod --config B").
std::vector<std::string> job_command(const DaemonSetup& s, const std::vector<std::string>& endpoints) {
  std::vector<std::string> args = {KAIO_MPIRUN};
  std::istringstream flags(KAIO_MPIRUN_FLAGS);
  for (std::string f; flags >> f;) args.push_back(f);
  if (endpoints.empty()) {
    write_job_config(s, s.endpoint, s.config_file());
    args.insert(args.end(), {"-np", "2", kaiod_bin().string(), "--config", s.config_file().string()});
    return args;
  }
  for (size_t r = 0; r < endpoints.size(); ++r) {
    const fs::path file = s.dir / ("kaiod-" + std::to_string(r) + ".json");
    write_job_config(s, endpoints[r], file);
    if (r > 0) args.emplace_back(":");
    args.insert(args.end(), {"-np", "1", kaiod_bin().string(), "--config", file.string()});
  }
  return args;
}

// kaioctl against one rank's socket.
CommandResult kaioctl_at(const fs::path& socket, const std::string& args) {
  return run_command(shell_quote(kaioctl_bin().string()) + " --socket " + shell_quote(socket.string()) + " " + args,
                     60);
}

// The kaiod of `rank` in the job whose HOME is `home` (run_job sets it to the
// test's folder): MpiJob tests run side by side under ctest -j, and another
// job's rank must be neither killed nor sampled.
pid_t rank_pid(const fs::path& home, int rank) {
  const std::string want_rank = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  const std::string want_home = "HOME=" + home.string();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (fs::read_symlink(e.path() / "exe", ec) != kaiod_bin() || ec) continue;
    std::string env = read_text(e.path() / "environ");
    bool rank_seen = false, home_seen = false;
    for (size_t at = 0; at < env.size();) {
      size_t end = env.find('\0', at);
      if (end == std::string::npos) end = env.size();
      const std::string_view var(env.data() + at, end - at);
      rank_seen = rank_seen || var == want_rank;
      home_seen = home_seen || var == want_home;
      at = end + 1;
    }
    if (rank_seen && home_seen) return static_cast<pid_t>(std::stoi(name));
  }
  return 0;
}

// Windows the ranks' decoders produced, from the log lines "...: N windows, ...".
int64_t decoded_windows(const fs::path& log) {
  static const std::regex line(R"(\): (\d+) windows, )");
  int64_t total = 0;
  std::istringstream in(read_text(log));
  for (std::string text; std::getline(in, text);)
    if (std::smatch m; std::regex_search(text, m, line)) total += std::stoll(m[1]);
  return total;
}

struct JobRun {
  int exit_code = -1;
  bool acted = false;  // the Action ran
  uint64_t peak[2] = {0, 0};
  std::optional<json> status;  // rank 1's, while it ran
  std::string human_status;    // rank 1's `kaioctl status`
  std::vector<TraceLine> trace[2];
};

// Something a test does to a running job once `when` holds (polled every
// 20 ms while both ranks run).
struct Action {
  std::function<bool()> when;  // null: nothing
  std::function<void()> run;
  bool may_miss = false;  // the caller handles a job that ended first (JobRun::acted)
};

// `run` once rank 0's trace reaches `step`.
Action at_step(const DaemonSetup& s, int64_t step, std::function<void()> run, bool may_miss = false) {
  const fs::path trace = s.dir / "trace-0.txt";
  return {[trace, step] {
            auto lines = read_trace(trace);
            return !lines.empty() && lines.back().step >= step;
          },
          std::move(run), may_miss};
}

// Runs the job to its end (bounded), doing `action` on the way; `endpoints`
// (one per rank) gives each rank its own Hub.
JobRun run_job(const DaemonSetup& s, const Action& action = {}, const std::vector<std::string>& endpoints = {}) {
  JobRun out;
  const std::vector<std::string> args = job_command(s, endpoints);
  std::map<std::string, std::string> env = {{"OMPI_ALLOW_RUN_AS_ROOT", "1"},
                                            {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
                                            {"KAIO_WINDOW_TRACE", (s.dir / "trace-{rank}.txt").string()},
                                            {"HOME", s.dir.string()}};
  std::unique_ptr<DiskSampler> disks[2];
  for (int r = 0; r < 2; ++r) {
    fs::create_directories(rank_dir(s, r));
    disks[r] = std::make_unique<DiskSampler>(std::vector<fs::path>{rank_dir(s, r) / "cache", rank_dir(s, r) / "state"});
  }
  Child job(args, s.log(), env,
            {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "HF_TOKEN", "HF_ENDPOINT", "HF_TOKEN_PATH"});
  const auto deadline = Clock::now() + 180s;
  bool pids_set[2] = {false, false};
  std::optional<Clock::time_point> acted;
  while (job.running() && Clock::now() < deadline) {
    if (action.when && !acted && pids_set[1] && action.when()) {
      action.run();
      acted = Clock::now();
    }
    for (int r = 0; r < 2; ++r)
      if (!pids_set[r])
        if (pid_t pid = rank_pid(s.dir, r)) {
          disks[r]->set_pid(pid);
          pids_set[r] = true;
        }
    if (!out.status)
      if (auto st = status_direct(rank_socket(s, 1))) {
        out.status = st;
        out.human_status = kaioctl_at(rank_socket(s, 1), "status").output;
      }
    std::this_thread::sleep_for(20ms);
  }
  if (job.running()) ADD_FAILURE() << "the job did not end within 180 s; log " << s.log();
  if (acted)
    std::printf("mpi job: acted, the job ended %.1f s later\n",
                std::chrono::duration<double>(Clock::now() - *acted).count());
  else if (action.when && !action.may_miss)
    ADD_FAILURE() << "the job ended before the test could act on it";
  out.acted = acted.has_value();
  job.kill_and_reap();
  out.exit_code = job.exit_code();
  for (int r = 0; r < 2; ++r) {
    disks[r]->finish();
    out.peak[r] = disks[r]->peak();
    out.trace[r] = read_trace(s.dir / ("trace-" + std::to_string(r) + ".txt"));
  }
  return out;
}

using WindowSet = std::set<std::pair<std::string, int>>;

// The checks every test makes: each window once across the ranks, budgets,
// the same loss on every rank at each step, the job's status fields. The
// windows expected are `expected`, else those the log says were decoded (a
// job that ran once). Returns the windows trained.
WindowSet expect_one_job(const DaemonSetup& s, const JobRun& run, int clips, const WindowSet* expected = nullptr,
                         const std::string& allreduce = "mpi (host memory)") {
  EXPECT_EQ(run.exit_code, 0) << "log " << s.log();
  const uint64_t budget = 16'000'000;
  for (int r = 0; r < 2; ++r) {
    EXPECT_LE(run.peak[r], budget) << "rank " << r << " over its budget";
    EXPECT_GT(run.peak[r], 0u) << "rank " << r << " never sampled";
    EXPECT_FALSE(run.trace[r].empty()) << "rank " << r << " trained nothing: the files were not split";
  }
  WindowSet windows;
  std::set<std::string> clip_ids[2];
  size_t lines = 0;
  std::map<int64_t, std::string> loss_of_step;
  for (int r = 0; r < 2; ++r)
    for (const auto& l : run.trace[r]) {
      windows.emplace(l.clip, l.window);
      clip_ids[r].insert(l.clip);
      ++lines;
      auto [it, fresh] = loss_of_step.emplace(l.step, l.loss);
      EXPECT_EQ(it->second, l.loss) << "ranks disagree on the loss of step " << l.step;
    }
  EXPECT_EQ(lines, windows.size()) << "a window was trained twice";
  if (expected)
    EXPECT_EQ(windows, *expected) << "not the windows of the uninterrupted job";
  else
    EXPECT_EQ(static_cast<int64_t>(windows.size()), decoded_windows(s.log())) << "windows decoded but never trained";
  std::set<std::string> all = clip_ids[0];
  all.insert(clip_ids[1].begin(), clip_ids[1].end());
  EXPECT_EQ(static_cast<int>(all.size()), clips);
  EXPECT_EQ(all.size(), clip_ids[0].size() + clip_ids[1].size()) << "a clip trained on both ranks";
  // Both ranks end on the same step, checkpointed.
  const int64_t steps = static_cast<int64_t>(loss_of_step.size());
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(last_durable_checkpoint(rank_dir(s, r) / "state" / "kaio.db", LedgerRead::copy), steps) << "rank " << r;
  if (!run.status) {
    ADD_FAILURE() << "rank 1 never answered status";
    return windows;
  }
  EXPECT_EQ((*run.status)["job"].value("rank", -1), 1);
  EXPECT_EQ((*run.status)["job"].value("world", -1), 2);
  EXPECT_EQ((*run.status)["job"].value("allreduce", std::string()), allreduce);
  EXPECT_NE(run.human_status.find("job       rank 1 of 2, all-reduce over " + allreduce), std::string::npos)
      << run.human_status;
  const std::string log = read_text(s.log());
  for (int r = 0; r < 2; ++r)
    EXPECT_NE(log.find("job: rank " + std::to_string(r) + " of 2, all-reduce over " + allreduce), std::string::npos);
  std::printf("mpi job: %zu windows in %lld steps, rank 0 %zu / rank 1 %zu windows, peak disk %llu / %llu bytes\n",
              windows.size(), static_cast<long long>(steps), run.trace[0].size(), run.trace[1].size(),
              static_cast<unsigned long long>(run.peak[0]), static_cast<unsigned long long>(run.peak[1]));
  return windows;
}

#define REQUIRE_MPI()                                                                   \
  do {                                                                                  \
    if (std::string(KAIO_MPIRUN).empty()) GTEST_SKIP() << "skipped: built without MPI"; \
  } while (0)

DatasetSpec job_spec(int files) {
  DatasetSpec spec;
  spec.clips = 3 * files;
  spec.clips_per_archive = 3;
  spec.seconds = 4;
  return spec;
}

// kaio-hub serving `files` archives of 3 clips (or `spec`), and a job's setup against it.
struct JobHub : HubRun {
  JobHub(const std::string& tag, int files) : JobHub(tag, job_spec(files)) {}
  JobHub(const std::string& tag, const DatasetSpec& spec) : HubRun(tag, {}, spec) {
    s.train = {{"batch_size", 2}, {"checkpoint_every", 2}};
    s.decode = {{"workers", 1}};
  }
};

TEST(MpiJob, TwoRanksTrainEveryWindowOnceEachUnderItsOwnBudget) {
  REQUIRE_MPI();
  JobHub h("mpi-even", 4);
  auto run = run_job(h.s);
  expect_one_job(h.s, run, 12);
}

// A job whose global batches are those of one kaiod with twice the batch,
// by the choice of data and config, row for row (masks follow rows: sample i
// of a step's global batch). One clip per file, 2.5 s at decode.fps 4 (10
// frames, one window of 8). The job, batch 1 a rank and shuffle_clips 1:
// rank r trains the file at plan position 2k+r at step k, as sample r. One
// kaiod, batch 2 and shuffle_clips 2 (a batch never spans chunks): chunk k is
// positions 2k and 2k+1, in the order of its seeded permutation, and with
// train.seed 14 that order is the plan's for the first 5 chunks (seeds 1-13
// swap one; the rows compared below would show it). With more windows per
// file each rank permutes its chunk of B windows, one kaiod its chunk of 2B,
// so the same windows would land on other rows.
TEST(MpiJob, FollowsTheLossCurveOfOneKaiodWithTheGlobalBatch) {
  REQUIRE_MPI();
  const int files = 10;
  DatasetSpec spec;
  spec.clips = files;
  spec.clips_per_archive = 1;
  spec.seconds = 2.5;
  JobHub h("mpi-curve", spec);
  h.s.train = {
      {"batch_size", 1}, {"checkpoint_every", 2}, {"shuffle_clips", 1}, {"seed", 14}, {"ordered_reduce", true}};
  auto job = run_job(h.s);
  expect_one_job(h.s, job, files, nullptr, "mpi (host memory, rank-ordered)");

  DaemonSetup single = h.s;
  single.dir = h.dir / "single";
  fs::create_directories(single.dir);
  single.train["batch_size"] = 2;
  single.train["shuffle_clips"] = 2;
  single.write_config();
  Child kaiod;
  start_kaiod(kaiod, single);
  ASSERT_TRUE(kaiod.wait_for(180s).has_value()) << "the 1-rank kaiod did not end within 180 s; log " << single.log();
  ASSERT_EQ(kaiod.exit_code(), 0) << tail(read_text(single.log()));

  // A step's rows in batch order (the trace writes them so; rank 0's row
  // first), and its loss.
  struct Step {
    std::vector<std::pair<std::string, int>> rows;
    std::string loss;
  };
  auto add_steps = [](const std::vector<TraceLine>& lines, std::map<int64_t, Step>& out) {
    for (const auto& l : lines) {
      out[l.step].rows.emplace_back(l.clip, l.window);
      out[l.step].loss = l.loss;
    }
  };
  std::map<int64_t, Step> by_job, by_one;
  for (int r = 0; r < 2; ++r) add_steps(job.trace[r], by_job);
  add_steps(read_trace(single.trace()), by_one);
  ASSERT_EQ(by_one.size(), static_cast<size_t>(files / 2)) << "the 1-rank run's steps are not batches of 2";
  ASSERT_EQ(by_job.size(), by_one.size());
  // Not bit for bit: one kaiod's BLAS sums a weight gradient's 2 rows at
  // once, the job adds two sums of 1 row; the weights then differ by
  // rounding, and so do later losses.
  double largest = 0;
  for (const auto& [step, one] : by_one) {
    const Step& two = by_job[step];
    EXPECT_EQ(two.rows, one.rows) << "step " << step << " trained other windows, or in another order";
    const double a = std::stod(two.loss), b = std::stod(one.loss);
    const double rel = std::abs(a - b) / std::abs(b);
    largest = std::max(largest, rel);
    EXPECT_LE(rel, 1e-5) << "step " << step << ": loss " << two.loss << " (job) against " << one.loss << " (1 rank)";
  }
  std::printf("mpi job: %zu steps on the rows of the 1-rank run, largest relative loss difference %.3g\n",
              by_one.size(), largest);
}

// Three files: rank 0 gets two, rank 1 one and runs out first; it joins the
// remaining steps with no window and the job still ends.
TEST(MpiJob, AnOddNumberOfFilesNeverHangs) {
  REQUIRE_MPI();
  JobHub h("mpi-uneven", 3);
  auto run = run_job(h.s);
  expect_one_job(h.s, run, 9);
  EXPECT_GT(run.trace[0].size(), run.trace[1].size()) << "rank 0 should have had the larger part";
}

// kill -9 of one rank at a progress point: the other does not hang (the
// launcher ends the job), and a restart of the job trains what was lost,
// nothing twice, with the loss curve of an uninterrupted job.
TEST(MpiJob, KillingOneRankEndsTheJobAndARestartLosesNothing) {
  REQUIRE_MPI();
  JobHub reference("mpi-reference", 6);
  auto whole = run_job(reference.s);
  const WindowSet all_windows = expect_one_job(reference.s, whole, 18);

  // A kill that lands once the job has finished training (a loaded machine
  // polls late) is no kill: a fresh job is killed earlier, until one lands.
  std::unique_ptr<JobHub> killed;
  std::unique_ptr<JobRun> first;  // a pointer: JobRun is built in place, never assigned
  std::random_device seed;
  int64_t kill_at = 2 + static_cast<int64_t>(seed() % 5);  // of about 9 steps
  for (int attempt = 1; attempt <= 4; ++attempt, kill_at = 2) {
    killed = std::make_unique<JobHub>("mpi-kill", 6);
    std::printf("mpi job: kill -9 of rank 1 at step %lld (of %zu), attempt %d\n", static_cast<long long>(kill_at),
                whole.trace[0].empty() ? size_t{0} : static_cast<size_t>(whole.trace[0].back().step), attempt);
    const fs::path home = killed->s.dir;
    first = std::make_unique<JobRun>(run_job(killed->s, at_step(
                                                            killed->s, kill_at,
                                                            [home] {
                                                              // 0 (gone already) must not reach kill(): it would kill
                                                              // this test's group.
                                                              if (pid_t pid = rank_pid(home, 1); pid > 0)
                                                                ::kill(pid, SIGKILL);
                                                            },
                                                            true)));
    if (first->acted && first->exit_code != 0) break;
  }
  ASSERT_TRUE(first->acted && first->exit_code != 0) << "no kill landed before the job finished, in 4 jobs";
  HubRun& h = *killed;
  for (int r = 0; r < 2; ++r) EXPECT_LE(first->peak[r], 16'000'000u) << "rank " << r << " over its budget";
  // What the job trained past the checkpoint every rank holds is trained again.
  int64_t durable = INT64_MAX;
  for (int r = 0; r < 2; ++r)
    durable = std::min(durable, last_durable_checkpoint(rank_dir(h.s, r) / "state" / "kaio.db", LedgerRead::copy));
  for (int r = 0; r < 2; ++r) truncate_trace(h.s.dir / ("trace-" + std::to_string(r) + ".txt"), durable);

  auto second = run_job(h.s);
  expect_one_job(h.s, second, 18, &all_windows);
  std::map<int64_t, std::string> resumed, uninterrupted;
  for (int r = 0; r < 2; ++r) {
    for (const auto& l : second.trace[r]) resumed[l.step] = l.loss;
    for (const auto& l : whole.trace[r]) uninterrupted[l.step] = l.loss;
  }
  EXPECT_EQ(resumed, uninterrupted) << "the restarted job's loss curve differs from the uninterrupted one";
}

// `kaioctl pause` on rank 1 holds the whole job: both ranks checkpoint and
// stop stepping; `resume` there lets it finish with every window once.
TEST(MpiJob, APauseOnOneRankHoldsTheWholeJob) {
  REQUIRE_MPI();
  JobHub h("mpi-pause", 6);
  const fs::path socket0 = rank_socket(h.s, 0), socket1 = rank_socket(h.s, 1);
  int64_t held_step = -1;
  std::vector<int64_t> steps_while_paused;
  auto run = run_job(h.s, at_step(h.s, 2, [&] {
                       auto paused = kaioctl_at(socket1, "pause --reason mpi-test");  // returns once acknowledged
                       EXPECT_EQ(paused.exit_code, 0) << paused.output;
                       // Rank 0 was not asked; it is held all the same, at the pause checkpoint.
                       // The checkpoint step is rank 1's: it acknowledged once its checkpoint
                       // was written, while rank 0 may still be recording its own.
                       for (int i = 0; i < 20; ++i) {
                         auto st0 = status_direct(socket0), st1 = status_direct(socket1);
                         if (!st0 || !st1) continue;
                         steps_while_paused.push_back((*st0)["train"].value("step", -1));
                         steps_while_paused.push_back((*st1)["train"].value("step", -1));
                         if (held_step < 0) held_step = (*st1)["train"].value("checkpoint_step", -2);
                         std::this_thread::sleep_for(50ms);
                       }
                       // Any rank names the rank the job waits for.
                       if (auto st0 = status_direct(socket0)) {
                         EXPECT_EQ((*st0)["job"]["data_wait_seconds"].size(), 2u) << st0->dump();
                         const int slowest = (*st0)["job"].value("slowest_rank", -1);
                         EXPECT_TRUE(slowest == 0 || slowest == 1) << st0->dump();
                       }
                       auto human = kaioctl_at(socket0, "status");
                       EXPECT_NE(human.output.find(", slowest rank "), std::string::npos) << human.output;
                       auto resumed = kaioctl_at(socket1, "resume");
                       EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
                     }));
  ASSERT_FALSE(steps_while_paused.empty()) << "no status while paused";
  for (int64_t step : steps_while_paused) EXPECT_EQ(step, held_step) << "a rank stepped while the job was paused";
  expect_one_job(h.s, run, 18);
}

// Each rank has its own kaio-hub; rank 1's cuts itself off once it has sent
// more than the largest archive, that is after rank 1's second file (kaio-hub
// sends a file this small in one piece): rank 1 trains its first chunk and
// meets the outage with a file still to fetch, whatever the machine's speed.
// Rank 1 reports waiting-network; rank 0,
// whose Hub stays up, waits at the all-reduce and its status names rank 1
// and why; once rank 1's Hub is back the job finishes, every window once.
TEST(MpiJob, AHubOutageSeenByOneRankHoldsTheJobUntilTheHubIsBack) {
  REQUIRE_MPI();
  JobHub h("mpi-outage", 6);
  h.s.fetch = {{"parallel_files", 1}};
  fs::create_directories(h.dir / "repos1/kaio-test");
  fs::create_directory_symlink(dataset(h.spec), h.dir / "repos1/kaio-test/llava");
  HubProcess hub1(h.dir / "repos1", {}, h.dir / "hub1.log");
  ASSERT_TRUE(h.hub->ok() && hub1.ok());
  uint64_t largest = 0;
  for (const auto& e : fs::recursive_directory_iterator(dataset(h.spec)))
    if (e.path().string().ends_with(".tar.gz")) largest = std::max<uint64_t>(largest, e.file_size());
  hub1.faults({{"outage_after_bytes", largest + 1}});
  const fs::path socket0 = rank_socket(h.s, 0), socket1 = rank_socket(h.s, 1);
  std::optional<json> cut0, cut1;  // the ranks' status once both show the outage
  // Rank 0 names rank 1 once its own next batch is ready: until then it waits
  // for its own data as well (its Hub is up, so that passes).
  auto rank0_names_rank1 = [](const json& st) {
    bool names_rank1 = false;
    for (const auto& w : st["job"].value("waiting_for", json::array())) {
      if (w.value("rank", -1) == 0) return false;
      if (w.value("rank", -1) == 1 && w.value("reason", std::string()) == "waiting-network") names_rank1 = true;
    }
    return names_rank1;
  };
  // Rank 1 may show waiting-network while its last fetched file still
  // decodes, and then step once more: the human status is read in the same
  // round, so all three are taken while the job waits.
  auto both_see_it = [&] {
    auto st0 = status_direct(socket0), st1 = status_direct(socket1);
    if (!st0 || !st1 || (*st1)["state"] != "waiting-network" || !rank0_names_rank1(*st0)) return false;
    auto human = kaioctl_at(socket0, "status").output;
    if (human.find(", waiting for rank 1 (waiting-network)") == std::string::npos) return false;
    cut0 = st0;
    cut1 = st1;
    return true;
  };
  auto run = run_job(h.s,
                     {both_see_it,
                      [&] {
                        hub1.faults({{"outage_ms", 0}});  // the network is back
                      }},
                     {h.hub->url(), hub1.url()});
  ASSERT_TRUE(cut0 && cut1) << "rank 1 never showed waiting-network with rank 0 naming it in its status and in "
                               "kaioctl status; log "
                            << h.s.log();
  EXPECT_EQ((*cut0)["state"], "running") << cut0->dump();
  EXPECT_EQ((*cut0).value("state_detail", std::string()), "waiting at the all-reduce for rank 1 (waiting-network)");
  EXPECT_GT(hub1.stats()["faults"].value("outage_close", 0ull), 0u) << "rank 1 never met its Hub's outage";
  EXPECT_EQ(h.hub->stats()["faults"].value("outage_close", 0ull), 0u) << "rank 0's Hub was cut";
  std::printf("mpi job: rank 1 cut at step %lld (rank 0 at step %lld), carried on when its Hub was back\n",
              static_cast<long long>((*cut1)["train"].value("step", -1)),
              static_cast<long long>((*cut0)["train"].value("step", -1)));
  expect_one_job(h.s, run, 18);
}

}  // namespace
}  // namespace kaio::reliability
