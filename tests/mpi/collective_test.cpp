// Run by ctest as `mpirun -np 2 test_mpi_collective` (tests/mpi/CMakeLists.txt):
// every rank runs every test, in the same order, so the collectives inside
// them meet. The MPI collective, then the trainer's data-parallel step
// against one process stepping on the union of the ranks' batches.
#include "train/collective.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "common/error.h"
#include "train/backend.h"
#include "train/collective_nccl.h"
#include "train/model.h"
#include "train/trainer.h"
#include "train/trainer_internal.h"

namespace {

using namespace kaio::train;

constexpr int kFrames = 8, kSize = 32, kBatch = 2;  // per rank

// One MPI collective per process (MPI is initialised once); the ordered one shares it.
Collective& job() {
  static std::shared_ptr<Collective> plain = make_mpi_collective(false);
  return *plain;
}
std::shared_ptr<Collective> shared_job() {
  static std::shared_ptr<Collective> owner(&job(), [](Collective*) {});
  return owner;
}

#define REQUIRE_TWO_RANKS()                                                                            \
  do {                                                                                                 \
    if (!mpi_built()) GTEST_SKIP() << "skipped: built without MPI";                                    \
    if (job().world() != 2) GTEST_SKIP() << "skipped: needs mpirun -np 2, world is " << job().world(); \
  } while (0)

kaio::TrainConfig tiny_config(int batch) {
  kaio::TrainConfig c;
  c.backend = "cpu";
  c.model = "tiny";
  c.batch_size = batch;
  c.lr = 1e-3;
  c.warmup_steps = 2;
  c.threads = 1;  // the same OpenMP split everywhere: sums in the same order
  c.seed = 5;
  return c;
}

// `count` windows of deterministic noise over a gradient, different per step.
std::vector<uint8_t> windows(int count, unsigned step) {
  std::mt19937 rng(1000 + step);
  std::vector<uint8_t> out(static_cast<size_t>(count) * kFrames * kSize * kSize * 3);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>((i % 97) + rng() % 64);
  return out;
}
size_t window_bytes() {
  return static_cast<size_t>(kFrames) * kSize * kSize * 3;
}

// Rank `r`'s half of a global batch of 2 * kBatch windows.
const uint8_t* half_of(const std::vector<uint8_t>& all, int r) {
  return all.data() + static_cast<size_t>(r) * kBatch * window_bytes();
}

std::vector<float> params_of(Trainer& t) {
  auto& model = internals(t).model();
  std::vector<float> p(model.param_count());
  model.read_params(p.data());
  return p;
}
std::vector<float> grads_of(Trainer& t) {
  auto& model = internals(t).model();
  std::vector<float> g(model.param_count());
  model.read_grads(g.data());
  return g;
}

// Rank 0's copy of `v` on every rank.
std::vector<float> from_rank0(std::vector<float> v) {
  job().broadcast(v.data(), v.size(), 0);
  return v;
}

TEST(MpiCollective, SumsBroadcastsAndNamesItsEngine) {
  REQUIRE_TWO_RANKS();
  EXPECT_EQ(job().engine(), "mpi (host memory)");
  int64_t counts[2] = {job().rank() + 1, 10};
  job().allreduce_sum(counts, 2);
  EXPECT_EQ(counts[0], 3);
  EXPECT_EQ(counts[1], 20);
  double d = 0.25 * (job().rank() + 1);
  job().allreduce_sum(&d, 1);
  EXPECT_EQ(d, 0.75);
  std::vector<float> b(5, static_cast<float>(job().rank() + 7));
  job().broadcast(b.data(), b.size(), 1);
  EXPECT_EQ(b, std::vector<float>(5, 8.0f));
  job().barrier();
}

// NCCL and RCCL are loaded at run time. Here a stand-in NCCL over MPI
// (fake_nccl.cpp) is loaded by path: the engine takes the float sums (staged
// through the cpu backend's memory), the other sums stay on MPI.
TEST(DeviceAllreduce, ALoadedNcclCarriesTheFloatSums) {
  REQUIRE_TWO_RANKS();
  auto memory = make_cpu_backend(1);
  struct GiveBack {  // before `memory` goes: the engine's buffer is in it
    ~GiveBack() { job().carry_float_sums(nullptr); }
  } give_back;
  auto choice = choose_allreduce(job(), *memory, false, KAIO_FAKE_NCCL);
  ASSERT_TRUE(choice.engine) << choice.reason;
  EXPECT_EQ(choice.reason, std::string(KAIO_FAKE_NCCL) + " loaded");
  job().carry_float_sums(std::move(choice.engine));
  EXPECT_EQ(job().engine(), "nccl (device memory)");
  for (size_t n : {size_t{10}, size_t{1000}}) {  // the second grows the device buffer
    std::vector<float> v(n, 1.5f + static_cast<float>(job().rank()));
    job().allreduce_sum(v.data(), v.size());
    EXPECT_EQ(v, std::vector<float>(n, 4.0f));
  }
  int64_t count = job().rank() + 1;
  job().allreduce_sum(&count, 1);
  EXPECT_EQ(count, 3);
  job().carry_float_sums(nullptr);
  EXPECT_EQ(job().engine(), "mpi (host memory)");
}

// Without the library, with one that is not NCCL, on the cpu backend, with
// train.ordered_reduce, or when another rank lacks it: MPI, and the reason.
TEST(DeviceAllreduce, StaysOnMpiAndSaysWhy) {
  REQUIRE_TWO_RANKS();
  auto memory = make_cpu_backend(1);
  const std::string missing = "libkaio-no-such-nccl.so.2";
  auto absent = choose_allreduce(job(), *memory, false, missing);
  EXPECT_FALSE(absent.engine);
  EXPECT_EQ(absent.reason.rfind(missing + " not found (", 0), 0u) << absent.reason;
  auto not_nccl = choose_allreduce(job(), *memory, false, "libm.so.6");
  EXPECT_FALSE(not_nccl.engine);
  EXPECT_EQ(not_nccl.reason, "libm.so.6 has no ncclGetUniqueId");
  EXPECT_EQ(choose_allreduce(job(), *memory, false).reason, "cpu backend");
  EXPECT_EQ(choose_allreduce(job(), *memory, true, KAIO_FAKE_NCCL).reason,
            "train.ordered_reduce asks for the rank-ordered sum");
  auto mixed = choose_allreduce(job(), *memory, false, job().rank() == 0 ? KAIO_FAKE_NCCL : missing);
  EXPECT_FALSE(mixed.engine);
  if (job().rank() == 0) {
    EXPECT_EQ(mixed.reason, "another rank of the job cannot use " + std::string(KAIO_FAKE_NCCL));
  }
  EXPECT_EQ(job().engine(), "mpi (host memory)");
  EXPECT_EQ(device_allreduce_library("cuda"), "libnccl.so.2");
  EXPECT_EQ(device_allreduce_library("hip"), "librccl.so");
  EXPECT_EQ(device_allreduce_library("cpu"), "");
}

// With two ranks a sum is one addition, a+b == b+a in IEEE arithmetic: MPI's
// own all-reduce is already the rank-ordered one, bit for bit.
TEST(MpiCollective, TwoRankSumsEqualTheRankOrderedSum) {
  REQUIRE_TWO_RANKS();
  auto ordered = make_mpi_collective(true);
  EXPECT_EQ(ordered->engine(), "mpi (host memory, rank-ordered)");
  std::vector<float> mine(1000), other(1000);
  for (int r = 0; r < 2; ++r) {
    std::mt19937 rng(77 + r);
    std::normal_distribution<float> n(0, 1);
    for (auto& x : r == job().rank() ? mine : other) x = n(rng) * std::pow(10.0f, static_cast<float>(rng() % 8));
  }
  std::vector<float> expected(1000);
  const auto& r0 = job().rank() == 0 ? mine : other;
  const auto& r1 = job().rank() == 0 ? other : mine;
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = r0[i] + r1[i];
  auto plain_sum = mine, ordered_sum = mine;
  job().allreduce_sum(plain_sum.data(), plain_sum.size());
  ordered->allreduce_sum(ordered_sum.data(), ordered_sum.size());
  EXPECT_EQ(0, std::memcmp(plain_sum.data(), expected.data(), expected.size() * 4));
  EXPECT_EQ(0, std::memcmp(ordered_sum.data(), expected.data(), expected.size() * 4));
}

// The exact statement: the reduced gradient is rank 0's half-batch gradient
// plus rank 1's, each weighted by its share, bit for bit; the loss is the
// global batch's; and every rank ends the step with the same weights.
TEST(DataParallelStep, IsTheShareWeightedSumOfTheRanksHalfBatchGradients) {
  REQUIRE_TWO_RANKS();
  const auto all = windows(2 * kBatch, 0);
  const uint8_t* mine = half_of(all, job().rank());
  auto ranked = Trainer::create(tiny_config(kBatch), kFrames, kSize, shared_job());
  ranked->join_job();
  const double loss = ranked->step(mine, kBatch).loss;
  const auto reduced = grads_of(*ranked);

  // Both halves in this process: the masks are those of global samples r*kBatch...
  auto alone = Trainer::create(tiny_config(kBatch), kFrames, kSize);
  Model& model = internals(*alone).model();
  const auto mask = tube_mask(model.grid(), 2 * kBatch, 0.9, 5, 0);
  std::vector<std::vector<float>> half(2);
  double half_loss[2];
  for (int r = 0; r < 2; ++r) {
    half_loss[r] = model.forward_backward(
        half_of(all, r), mask.data() + static_cast<size_t>(r) * kBatch * model.grid().tokens(), kBatch);
    half[r] = grads_of(*alone);
  }
  size_t differ = 0;
  for (size_t i = 0; i < reduced.size(); ++i) differ += reduced[i] != half[0][i] * 0.5f + half[1][i] * 0.5f;
  EXPECT_EQ(differ, 0u) << "of " << reduced.size() << " gradient elements";
  EXPECT_EQ(loss, (half_loss[0] * kBatch + half_loss[1] * kBatch) / (2 * kBatch));
  const auto params = params_of(*ranked);
  EXPECT_EQ(0, std::memcmp(params.data(), from_rank0(params).data(), params.size() * 4)) << "ranks disagree";
}

// A 2-rank job with batch B against one process with batch 2B on the same
// windows: the same masks and the same mean, but BLAS sums the 2B rows of a
// weight gradient in one go where the job adds two sums of B, so the two
// agree to float rounding, not bit for bit (docs/multi-rank.md).
TEST(DataParallelStep, FollowsOneProcessWithTheGlobalBatchToRounding) {
  REQUIRE_TWO_RANKS();
  auto ranked = Trainer::create(tiny_config(kBatch), kFrames, kSize, shared_job());
  auto alone = Trainer::create(tiny_config(2 * kBatch), kFrames, kSize);
  ranked->join_job();
  for (unsigned step = 0; step < 4; ++step) {
    const auto all = windows(2 * kBatch, step);
    const double job_loss = ranked->step(half_of(all, job().rank()), kBatch).loss;
    const double one_loss = alone->step(all.data(), 2 * kBatch).loss;
    EXPECT_NEAR(job_loss, one_loss, 1e-5 * one_loss) << "step " << step;
    if (step == 0) {
      const auto a = grads_of(*ranked), b = grads_of(*alone);
      double worst = 0, largest = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::abs(double(a[i]) - b[i]));
        largest = std::max(largest, std::abs(double(b[i])));
      }
      EXPECT_LT(worst, 1e-5 * largest) << "largest gradient " << largest;
    }
  }
  const auto params = params_of(*ranked);
  EXPECT_EQ(0, std::memcmp(params.data(), from_rank0(params).data(), params.size() * 4)) << "ranks disagree";
}

// Uneven data: rank 1 has run out and joins with no window. The step is then
// exactly rank 0's alone, bit for bit.
TEST(DataParallelStep, ARankWithoutDataContributesNothing) {
  REQUIRE_TWO_RANKS();
  auto ranked = Trainer::create(tiny_config(kBatch), kFrames, kSize, shared_job());
  auto alone = Trainer::create(tiny_config(kBatch), kFrames, kSize);
  ranked->join_job();
  for (unsigned step = 0; step < 3; ++step) {
    const auto batch = windows(kBatch, 10 + step);
    const auto job_result = ranked->step(batch.data(), job().rank() == 0 ? kBatch : 0);
    const auto one_result = alone->step(batch.data(), kBatch);
    EXPECT_DOUBLE_EQ(job_result.loss, one_result.loss) << "step " << step;
    EXPECT_EQ(job_result.grad_norm, one_result.grad_norm) << "step " << step;
  }
  const auto a = params_of(*ranked), b = params_of(*alone);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << "the job's weights are not rank 0's alone";
}

// Rank 0's weights win at the start, and ranks at different steps refuse to train together.
TEST(DataParallelStep, JoinTakesRankZerosModelAndRefusesMismatchedSteps) {
  REQUIRE_TWO_RANKS();
  auto config = tiny_config(kBatch);
  config.seed = 100 + static_cast<uint64_t>(job().rank());  // different initial weights per rank
  auto ranked = Trainer::create(config, kFrames, kSize, shared_job());
  ranked->join_job();
  const auto params = params_of(*ranked);
  EXPECT_EQ(0, std::memcmp(params.data(), from_rank0(params).data(), params.size() * 4));

  auto uneven = Trainer::create(tiny_config(kBatch), kFrames, kSize);  // alone: steps on its own
  if (job().rank() == 1) uneven->step(windows(kBatch, 0).data(), kBatch);
  const auto file =
      std::filesystem::temp_directory_path() / ("kaio-mpi-join-" + std::to_string(::getpid()) + ".kaiockpt");
  uneven->save_checkpoint(file, "");
  auto resumed = Trainer::create(tiny_config(kBatch), kFrames, kSize, shared_job());
  resumed->load_checkpoint(file);
  std::filesystem::remove(file);
  try {
    resumed->join_job();
    FAIL() << "ranks at steps 0 and 1 joined";
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::corrupt);
    EXPECT_NE(std::string(e.what()).find("different steps"), std::string::npos) << e.what();
  }
}

}  // namespace
