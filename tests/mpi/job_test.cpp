// A data-parallel job of two kaiod ranks under `mpirun -np 2` on loopback,
// against one kaio-hub: every window is trained once across the ranks, each
// rank stays under its own storage.budget (sampled every 20 ms), the ranks
// step with the same loss, and the job ends by itself with exit 0. Also with
// an odd number of files, where one rank runs out first.
#include <regex>

#include "tests/reliability/harness.h"

namespace kaio::reliability {
namespace {

// Every rank's paths from one config: {rank} in them (docs/multi-rank.md).
fs::path rank_dir(const DaemonSetup& s, int rank) {
  return s.dir / ("rank" + std::to_string(rank));
}

void write_job_config(const DaemonSetup& s) {
  s.write_config();
  json c = json::parse(read_text(s.config_file()));
  c["storage"]["cache_dir"] = (s.dir / "rank{rank}" / "cache").string();
  c["storage"]["state_dir"] = (s.dir / "rank{rank}" / "state").string();
  c["control"]["socket"] = (s.dir / "rank{rank}" / "kaiod.sock").string();
  std::ofstream(s.config_file()) << c.dump(2);
}

// The kaiod of rank `rank` among the children of this test, or 0.
pid_t rank_pid(int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (fs::read_symlink(e.path() / "exe", ec) != kaiod_bin() || ec) continue;
    std::string env = read_text(e.path() / "environ");
    for (size_t at = 0; at < env.size(); at = env.find('\0', at) + 1) {
      if (env.compare(at, want.size() + 1, want + '\0') == 0) return static_cast<pid_t>(std::stoi(name));
      if (env.find('\0', at) == std::string::npos) break;
    }
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
  uint64_t peak[2] = {0, 0};
  std::optional<json> status;  // rank 1's, while it ran
  std::string human_status;    // rank 1's `kaioctl status`
  std::vector<TraceLine> trace[2];
};

JobRun run_job(const DaemonSetup& s) {
  JobRun out;
  write_job_config(s);
  std::vector<std::string> args = {KAIO_MPIRUN};
  std::istringstream flags(KAIO_MPIRUN_FLAGS);
  for (std::string f; flags >> f;) args.push_back(f);
  args.insert(args.end(), {"-np", "2", kaiod_bin().string(), "--config", s.config_file().string()});
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
  while (job.running() && Clock::now() < deadline) {
    for (int r = 0; r < 2; ++r)
      if (!pids_set[r])
        if (pid_t pid = rank_pid(r)) {
          disks[r]->set_pid(pid);
          pids_set[r] = true;
        }
    if (!out.status)
      if (auto st = status_direct(rank_dir(s, 1) / "kaiod.sock")) {
        out.status = st;
        auto r = run_command(shell_quote(kaioctl_bin().string()) + " --socket " +
                                 shell_quote((rank_dir(s, 1) / "kaiod.sock").string()) + " status",
                             20);
        out.human_status = r.output;
      }
    std::this_thread::sleep_for(20ms);
  }
  if (job.running()) ADD_FAILURE() << "the job did not end within 180 s; log " << s.log();
  job.kill_and_reap();
  out.exit_code = job.exit_code();
  for (int r = 0; r < 2; ++r) {
    disks[r]->finish();
    out.peak[r] = disks[r]->peak();
    out.trace[r] = read_trace(s.dir / ("trace-" + std::to_string(r) + ".txt"));
  }
  return out;
}

// The checks both tests make: each window once across the ranks, budgets,
// the same loss on every rank at each step, the job's status fields.
void expect_one_job(const DaemonSetup& s, const JobRun& run, int clips) {
  EXPECT_EQ(run.exit_code, 0) << "log " << s.log();
  const uint64_t budget = 16'000'000;
  for (int r = 0; r < 2; ++r) {
    EXPECT_LE(run.peak[r], budget) << "rank " << r << " over its budget";
    EXPECT_GT(run.peak[r], 0u) << "rank " << r << " never sampled";
    EXPECT_FALSE(run.trace[r].empty()) << "rank " << r << " trained nothing: the files were not split";
  }
  std::set<std::pair<std::string, int>> windows;
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
  EXPECT_EQ(static_cast<int64_t>(windows.size()), decoded_windows(s.log())) << "windows decoded but never trained";
  std::set<std::string> all = clip_ids[0];
  all.insert(clip_ids[1].begin(), clip_ids[1].end());
  EXPECT_EQ(static_cast<int>(all.size()), clips);
  EXPECT_EQ(all.size(), clip_ids[0].size() + clip_ids[1].size()) << "a clip trained on both ranks";
  // Both ranks end on the same step, checkpointed.
  const int64_t steps = static_cast<int64_t>(loss_of_step.size());
  for (int r = 0; r < 2; ++r)
    EXPECT_EQ(last_durable_checkpoint(rank_dir(s, r) / "state" / "kaio.db", LedgerRead::copy), steps) << "rank " << r;
  ASSERT_TRUE(run.status.has_value()) << "rank 1 never answered status";
  EXPECT_EQ((*run.status)["job"].value("rank", -1), 1);
  EXPECT_EQ((*run.status)["job"].value("world", -1), 2);
  EXPECT_EQ((*run.status)["job"].value("allreduce", std::string()), "mpi (host memory)");
  EXPECT_NE(run.human_status.find("job       rank 1 of 2, all-reduce over mpi (host memory)"), std::string::npos)
      << run.human_status;
  const std::string log = read_text(s.log());
  for (int r = 0; r < 2; ++r)
    EXPECT_NE(log.find("job: rank " + std::to_string(r) + " of 2, all-reduce over mpi (host memory)"),
              std::string::npos);
  std::printf("mpi job: %zu windows in %lld steps, rank 0 %zu / rank 1 %zu windows, peak disk %llu / %llu bytes\n",
              windows.size(), static_cast<long long>(steps), run.trace[0].size(), run.trace[1].size(),
              static_cast<unsigned long long>(run.peak[0]), static_cast<unsigned long long>(run.peak[1]));
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

void configure(DaemonSetup& s) {
  s.train = {{"batch_size", 2}, {"checkpoint_every", 2}};
  s.decode = {{"workers", 1}};
}

TEST(MpiJob, TwoRanksTrainEveryWindowOnceEachUnderItsOwnBudget) {
  REQUIRE_MPI();
  HubRun h("mpi-even", {}, job_spec(4));
  configure(h.s);
  auto run = run_job(h.s);
  expect_one_job(h.s, run, 12);
}

// Three files: rank 0 gets two, rank 1 one and runs out first; it joins the
// remaining steps with no window and the job still ends.
TEST(MpiJob, AnOddNumberOfFilesNeverHangs) {
  REQUIRE_MPI();
  HubRun h("mpi-uneven", {}, job_spec(3));
  configure(h.s);
  auto run = run_job(h.s);
  expect_one_job(h.s, run, 9);
  EXPECT_GT(run.trace[0].size(), run.trace[1].size()) << "rank 0 should have had the larger part";
}

}  // namespace
}  // namespace kaio::reliability
