// The single-rank Collective and the launcher check (train/collective.h).
#include "train/collective.h"

#include <cstdlib>

#include "common/error.h"

namespace kaio::train {
namespace {

class SingleCollective final : public Collective {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  std::string engine() const override { return "none"; }
  void allreduce_sum(float*, size_t) override {}
  void allreduce_sum(int64_t*, size_t) override {}
  void allreduce_sum(double*, size_t) override {}
  void allreduce_min(int64_t*, size_t) override {}
  void broadcast(float*, size_t, int) override {}
  void barrier() override {}
  void carry_float_sums(std::unique_ptr<DeviceAllreduce>) override {}  // alone there is nothing to sum
  void abort(int) noexcept override {}
};

}  // namespace

std::unique_ptr<Collective> make_single_collective() {
  return std::make_unique<SingleCollective>();
}

bool launched_by_mpi() {
  // Open MPI's mpirun, PMIx launchers (srun --mpi=pmix) and PMI-1/2 ones.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"}) {
    const char* v = std::getenv(name);
    if (v && *v) return true;
  }
  return false;
}

#ifndef KAIO_HAVE_MPI
bool mpi_built() {
  return false;
}

std::unique_ptr<Collective> make_mpi_collective(bool) {
  throw Error(ErrorKind::config,
              "train.world: a rank of an MPI job (\"mpi\", or \"auto\" under mpirun or srun) needs a kaiod built "
              "with MPI (libopenmpi-dev, cmake -DKAIO_MPI=ON); \"single\" runs alone");
}
#endif

}  // namespace kaio::train
