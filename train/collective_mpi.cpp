// The MPI Collective (train/collective.h): MPI's collectives on host memory,
// compiled only with KAIO_MPI. Every call is non-blocking plus a polling
// wait that sleeps: Open MPI's blocking calls spin a core, and a rank that
// waits for a slower one (for its data, its Hub) must leave the cores to the
// decoders beside it.
#include <mpi.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "train/collective.h"

namespace kaio::train {
namespace {

void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) length = 0;
  throw Error(ErrorKind::transient, std::string(call) + " failed: " + std::string(text, static_cast<size_t>(length)));
}

// Polls `request` until it completes, sleeping between polls (50 us up to 1 ms).
void wait(MPI_Request& request, const char* call) {
  auto pause = std::chrono::microseconds(50);
  while (true) {
    int done = 0;
    check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), call);
    if (done) return;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

template <typename T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() {
  return MPI_FLOAT;
}
template <>
MPI_Datatype mpi_type<double>() {
  return MPI_DOUBLE;
}
template <>
MPI_Datatype mpi_type<int64_t>() {
  return MPI_INT64_T;
}

class MpiCollective final : public Collective {
 public:
  explicit MpiCollective(bool ordered) : ordered_(ordered) {
    int initialized = 0;
    check(MPI_Initialized(&initialized), "MPI_Initialized");
    if (!initialized) {
      // SERIALIZED: start-up's thread and then the trainer thread call in, never at once.
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
      if (provided < MPI_THREAD_SERIALIZED)
        throw Error(ErrorKind::config, "MPI_Init_thread: this MPI gives thread level " + std::to_string(provided) +
                                           ", kaiod needs MPI_THREAD_SERIALIZED");
      owns_mpi_ = true;
    }
    check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(MPI_COMM_WORLD, &world_), "MPI_Comm_size");
  }
  ~MpiCollective() override {
    device_.reset();  // its communicator goes before MPI does
    int finalized = 0;
    if (owns_mpi_ && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Finalize();
  }
  MpiCollective(const MpiCollective&) = delete;
  MpiCollective& operator=(const MpiCollective&) = delete;

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string engine() const override {
    if (device_) return device_->engine();
    return ordered_ ? "mpi (host memory, rank-ordered)" : "mpi (host memory)";
  }

  void allreduce_sum(float* data, size_t n) override {
    if (device_) return device_->sum(data, n);
    reduce(data, n);
  }
  void allreduce_sum(int64_t* data, size_t n) override { reduce(data, n); }
  void allreduce_sum(double* data, size_t n) override { reduce(data, n); }
  void allreduce_min(int64_t* data, size_t n) override { reduce(data, n, MPI_MIN); }

  void broadcast(float* data, size_t n, int root) override {
    MPI_Request request;
    check(MPI_Ibcast(data, count(n), MPI_FLOAT, root, MPI_COMM_WORLD, &request), "MPI_Ibcast");
    wait(request, "MPI_Ibcast");
  }
  void barrier() override {
    MPI_Request request;
    check(MPI_Ibarrier(MPI_COMM_WORLD, &request), "MPI_Ibarrier");
    wait(request, "MPI_Ibarrier");
  }
  void abort(int code) noexcept override { MPI_Abort(MPI_COMM_WORLD, code); }
  void carry_float_sums(std::unique_ptr<DeviceAllreduce> engine) override { device_ = std::move(engine); }

 private:
  static int count(size_t n) {
    if (n > static_cast<size_t>(INT32_MAX)) throw Error(ErrorKind::internal, "collective of more than 2^31 elements");
    return static_cast<int>(n);
  }

  template <typename T>
  void reduce(T* data, size_t n, MPI_Op op = MPI_SUM) {
    if (ordered_ && std::is_floating_point_v<T>) return reduce_in_rank_order(data, n);
    MPI_Request request;
    check(MPI_Iallreduce(MPI_IN_PLACE, data, count(n), mpi_type<T>(), op, MPI_COMM_WORLD, &request), "MPI_Iallreduce");
    wait(request, "MPI_Iallreduce");
  }

  // Rank 0 adds the ranks' arrays in rank order, then every rank gets its sum.
  template <typename T>
  void reduce_in_rank_order(T* data, size_t n) {
    std::vector<T> all(rank_ == 0 ? n * static_cast<size_t>(world_) : 0);
    MPI_Request request;
    check(MPI_Igather(data, count(n), mpi_type<T>(), all.data(), count(n), mpi_type<T>(), 0, MPI_COMM_WORLD, &request),
          "MPI_Igather");
    wait(request, "MPI_Igather");
    if (rank_ == 0) {
      for (size_t i = 0; i < n; ++i) {
        T sum = all[i];
        for (int r = 1; r < world_; ++r) sum += all[static_cast<size_t>(r) * n + i];
        data[i] = sum;
      }
    }
    check(MPI_Ibcast(data, count(n), mpi_type<T>(), 0, MPI_COMM_WORLD, &request), "MPI_Ibcast");
    wait(request, "MPI_Ibcast");
  }

  bool ordered_;
  std::unique_ptr<DeviceAllreduce> device_;  // NCCL or RCCL, when the trainer handed them the float sums
  bool owns_mpi_ = false;
  int rank_ = 0, world_ = 1;
};

}  // namespace

bool mpi_built() {
  return true;
}

std::unique_ptr<Collective> make_mpi_collective(bool ordered) {
  return std::make_unique<MpiCollective>(ordered);
}

}  // namespace kaio::train
