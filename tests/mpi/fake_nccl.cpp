// A stand-in NCCL for test_mpi_collective: the calls kaio resolves
// (train/collective_nccl.cpp), carried out by MPI on host memory, which is
// the cpu backend's "device" memory. So the loader, the unique id handed
// from rank 0 over MPI and the staged sums run on a machine without a GPU.
// Each call checks what real NCCL would need: every rank holds rank 0's id,
// float32 sums, the default stream.
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

extern "C" {

struct ncclComm {
  int rank, world;
};
struct ncclUniqueId {
  char internal[128];
};

constexpr int kSuccess = 0, kInvalidArgument = 4, kFloat32 = 7, kSum = 0;

int ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id->internal, 0, sizeof id->internal);
  std::snprintf(id->internal, sizeof id->internal, "kaio-fake-nccl %d", static_cast<int>(::getpid()));
  return kSuccess;
}

int ncclCommInitRank(ncclComm** comm, int nranks, ncclUniqueId id, int rank) {
  ncclUniqueId root = id;
  if (MPI_Bcast(root.internal, sizeof root.internal, MPI_CHAR, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
    return kInvalidArgument;
  if (std::memcmp(root.internal, id.internal, sizeof id.internal) != 0 ||
      std::strncmp(id.internal, "kaio-fake-nccl ", 15) != 0)
    return kInvalidArgument;
  *comm = new ncclComm{rank, nranks};  // NOLINT(cppcoreguidelines-owning-memory): the C API's raw handle
  return kSuccess;
}

int ncclAllReduce(const void* send, void* recv, size_t count, int type, int op, ncclComm* comm, void* stream) {
  if (type != kFloat32 || op != kSum || stream != nullptr || comm == nullptr) return kInvalidArgument;
  const void* from = send == recv ? MPI_IN_PLACE : send;
  if (MPI_Allreduce(from, recv, static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
    return kInvalidArgument;
  return kSuccess;
}

int ncclCommDestroy(ncclComm* comm) {
  delete comm;  // NOLINT(cppcoreguidelines-owning-memory): the C API's raw handle
  return kSuccess;
}

const char* ncclGetErrorString(int result) {
  return result == kSuccess ? "no error" : "invalid argument (fake NCCL)";
}

}  // extern "C"
