// A seeded, bounded property test of the whole engine over a space of inputs
// nobody shaped to pass: random datasets (1 to 3 batches of archives of 1 to
// 12 members, clips of 1 to 60 s, mixed resolutions, frame rates and
// encoders, now and then an archive cut short), budgets from the smallest
// kaiod accepts up to 8x that, 1 or 2 epochs, chunk sizes and checkpoint
// periods, and kills at random progress points. Every run must finish, never
// exceed its budget, and train every window exactly once, in the order and
// with the losses of the uninterrupted run with the same settings.
//
// KAIO_PROPERTY_SEEDS: the seeds, "1-3" by default (make test); scripts/soak.sh
// runs many more. Each seed prints its draw, so a failure can be replayed.
#include <gtest/gtest.h>

#include <random>
#include <sstream>

#include "tests/support/disk_sampler.h"
#include "tests/support/engine_run.h"

namespace fs = std::filesystem;
using namespace kaio;
using namespace kaio::test;

namespace {

std::vector<int> seeds_from_env() {
  const char* env = std::getenv("KAIO_PROPERTY_SEEDS");
  std::string text = env && *env ? env : "1-3";
  std::vector<int> seeds;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) {
    auto dash = part.find('-');
    int lo = std::stoi(part.substr(0, dash));
    int hi = dash == std::string::npos ? lo : std::stoi(part.substr(dash + 1));
    for (int s = lo; s <= hi; ++s) seeds.push_back(s);
  }
  return seeds;
}

template <typename T>
T pick(std::mt19937& rng, std::initializer_list<T> choices) {
  std::vector<T> v(choices);
  return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
}

int between(std::mt19937& rng, int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

struct Draw {
  std::string describe;
  std::vector<std::string> batches;  // kaio-mkdata arguments
  bool cut_one = false;
  int epochs = 1, shuffle_clips = 4, checkpoint_every = 4, budget_factor = 1, kills = 0;
};

Draw draw(int seed) {
  std::mt19937 rng(static_cast<unsigned>(seed) * 7919u + 17u);
  Draw d;
  int batches = between(rng, 1, 3);
  for (int b = 0; b < batches; ++b) {
    int per_archive = between(rng, 1, 12);
    int archives = between(rng, 1, 3);
    int seconds = pick(rng, {1, 2, 3, 5, 8, 15, 30, 60});
    auto [w, h] = seconds >= 15 ? pick(rng, {std::pair{96, 64}, std::pair{128, 96}})
                                : pick(rng, {std::pair{96, 64}, std::pair{160, 120}, std::pair{320, 240}});
    if (seconds >= 15) per_archive = std::min(per_archive, 3);  // bounds the encoding time
    std::string encoder = pick(rng, {std::string("libx264"), std::string("mpeg4")});
    d.batches.push_back("--seed " + std::to_string(seed * 10 + b) + " --clips " +
                        std::to_string(per_archive * archives) + " --clips-per-archive " + std::to_string(per_archive) +
                        " --seconds " + std::to_string(seconds) + " --width " + std::to_string(w) + " --height " +
                        std::to_string(h) + " --fps " + std::to_string(pick(rng, {24, 30})) + " --encoder " + encoder);
  }
  d.cut_one = between(rng, 0, 2) == 0;
  d.epochs = between(rng, 1, 2);
  d.shuffle_clips = between(rng, 2, 6);
  d.checkpoint_every = between(rng, 2, 6);
  d.budget_factor = pick(rng, {1, 2, 2, 4, 8});
  d.kills = between(rng, 1, 3);
  std::ostringstream out;
  out << "seed " << seed << ": " << d.batches.size() << " batches {";
  for (const auto& b : d.batches) out << " [" << b << "]";
  out << " }, cut one " << d.cut_one << ", epochs " << d.epochs << ", K " << d.shuffle_clips << ", checkpoint every "
      << d.checkpoint_every << ", budget x" << d.budget_factor << ", kills " << d.kills;
  d.describe = out.str();
  return d;
}

}  // namespace

TEST(Property, EveryRunFinishesUnderItsBudgetAndTrainsEveryWindowOnce) {
  for (int seed : seeds_from_env()) {
    Draw d = draw(seed);
    SCOPED_TRACE(d.describe);
    std::printf("%s\n", d.describe.c_str());
    Sandbox dir("property");
    auto served = serve(dir, d.batches[0], [&](const fs::path& repo) {
      for (size_t b = 1; b < d.batches.size(); ++b) {
        copy_dataset(d.batches[b], repo / ("batch" + std::to_string(b)));
      }
      size_t archives = 0;
      for (const auto& e : fs::recursive_directory_iterator(repo)) archives += e.path().extension() == ".gz";
      if (d.cut_one && archives >= 2) truncate_one_archive(repo);
    });
    Config c = config_for(dir, served, "64MB",
                          ", \"epochs\": " + std::to_string(d.epochs) +
                              ", \"shuffle_clips\": " + std::to_string(d.shuffle_clips) +
                              ", \"checkpoint_every\": " + std::to_string(d.checkpoint_every));
    c.storage.budget = smallest_accepted(c) * static_cast<uint64_t>(d.budget_factor);
    std::printf("  budget %llu, dataset %llu bytes\n", static_cast<unsigned long long>(c.storage.budget),
                static_cast<unsigned long long>(served.archive_bytes));

    Trace reference;
    {
      fs::remove_all(dir / "cache");
      fs::remove_all(dir / "state");
      DiskSampler sampler({dir / "cache", dir / "state"});
      daemon::Engine engine(c, &reference);
      engine.start();
      auto s = run_to_end(engine);
      sampler.finish();
      ASSERT_EQ(s.state, "done") << s.state_detail << " " << s.last_error;
      EXPECT_LE(sampler.peak(), c.storage.budget) << "disk over the budget";
      EXPECT_LE(s.peak_reserved_bytes, c.storage.budget);
      for (const auto& [epoch, windows] : reference.by_epoch) {
        std::set<Window> unique(windows.begin(), windows.end());
        EXPECT_EQ(unique.size(), windows.size()) << "a window repeated in epoch " << epoch;
      }
    }
    const int64_t steps = static_cast<int64_t>(reference.losses.size());
    fs::remove_all(dir / "cache");
    fs::remove_all(dir / "state");

    std::mt19937 rng(static_cast<unsigned>(seed));
    std::set<int64_t> kill_at;
    while (steps > 1 && static_cast<int>(kill_at.size()) < std::min<int64_t>(d.kills, steps - 1))
      kill_at.insert(std::uniform_int_distribution<int64_t>(1, steps - 1)(rng));
    fs::path file = dir / "trace.txt";
    int lives = 0;
    bool ended = false;
    while (!ended && lives < 20) {
      ++lives;
      pid_t child = start_life(c, file, {});
      DiskSampler sampler({dir / "cache", dir / "state"});
      int status = 0;
      auto end = await_life(child, file, kill_at, status);
      if (end == LifeEnd::hung) ADD_FAILURE() << "a life made no end within 600 s";
      bool killed = end == LifeEnd::killed;
      sampler.finish();
      EXPECT_LE(sampler.peak(), c.storage.budget) << "disk over the budget in life " << lives;
      if (killed) continue;
      ended = true;
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "see child: above";
    }
    auto resumed = replay(file);
    int64_t loss_mismatches = 0;
    for (const auto& [step, loss] : reference.losses)
      if (!resumed.losses.count(step) || std::abs(resumed.losses[step] - loss) > 1e-5 * std::max(1.0, std::abs(loss)))
        ++loss_mismatches;
    std::printf("  windows %zu of %zu (the uninterrupted run's), lives %d, loss mismatches %lld\n",
                resumed.windows.size(), reference.windows.size(), lives, static_cast<long long>(loss_mismatches));
    EXPECT_EQ(resumed.windows, reference.windows);
    EXPECT_EQ(loss_mismatches, 0);
    EXPECT_EQ(files_under(dir / "cache"), std::vector<std::string>{}) << "nothing left behind";
  }
}
