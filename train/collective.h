#pragma once
// The ranks of a data-parallel job and the collectives the trainer needs
// between them. One rank alone (world 1) is the default and every call is a
// no-op; under MPI (train/collective_mpi.cpp, built with KAIO_MPI) the calls
// are MPI collectives on host memory. Collectives are called from one thread
// at a time (the trainer thread, or start-up before it runs), in the same
// order on every rank.
//
// On GPUs the float sums (the gradient all-reduce) can be handed to NCCL or
// RCCL, loaded at run time (train/collective_nccl.h): carry_float_sums().
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kaio::train {

// An engine for the job's float sums other than the collective's own.
class DeviceAllreduce {
 public:
  virtual ~DeviceAllreduce() = default;
  virtual std::string engine() const = 0;  // "nccl (device memory)"
  // In place on a host array, the same result on every rank.
  virtual void sum(float* data, size_t n) = 0;
};

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // What carries the all-reduce: "none" alone, "mpi (host memory)" under MPI.
  virtual std::string engine() const = 0;

  // In place, the same result on every rank.
  virtual void allreduce_sum(float* data, size_t n) = 0;
  virtual void allreduce_sum(int64_t* data, size_t n) = 0;
  virtual void allreduce_sum(double* data, size_t n) = 0;
  virtual void allreduce_min(int64_t* data, size_t n) = 0;
  virtual void broadcast(float* data, size_t n, int root) = 0;
  virtual void barrier() = 0;
  // From now on allreduce_sum(float*) goes through `engine`, and engine()
  // names it; null gives the sums back to this collective. Every rank at once.
  virtual void carry_float_sums(std::unique_ptr<DeviceAllreduce> engine) = 0;
  // Ends every rank of the job (a rank that cannot go on would leave the
  // others waiting in a collective forever). Alone: does nothing.
  virtual void abort(int code) noexcept = 0;
};

// World 1: rank 0, every collective a no-op.
std::unique_ptr<Collective> make_single_collective();

// True when this process was started by mpirun or srun (their environment).
bool launched_by_mpi();

// Initialises MPI (once per process) and returns this rank's Collective.
// `ordered`: sums in rank order (gathered on rank 0, added rank by rank,
// broadcast) so the result does not depend on MPI's reduction algorithm.
// Throws kaio::Error(config) when kaio was built without MPI, and
// kaio::Error naming the MPI call when one fails.
std::unique_ptr<Collective> make_mpi_collective(bool ordered);

// Whether this build has MPI.
bool mpi_built();

}  // namespace kaio::train
