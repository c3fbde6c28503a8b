#pragma once
// NCCL (NVIDIA) or RCCL (AMD, the same API) for a GPU job's gradient
// all-reduce, loaded with dlopen at run time: Debian ships neither, and a
// kaiod built on such a machine still uses them where they are installed.
// Only the few calls kaio needs are declared and resolved (no nccl.h). The
// communicator's unique id goes from rank 0 to the others over the job's MPI
// collective. Untested on a GPU (docs/multi-rank.md).
#include <memory>
#include <string>

#include "train/backend.h"
#include "train/collective.h"

namespace kaio::train {

// The library a backend's all-reduce would load: "libnccl.so.2" for cuda,
// "librccl.so" for hip, "" for cpu.
std::string device_allreduce_library(const std::string& backend);

struct AllreduceChoice {
  std::unique_ptr<DeviceAllreduce> engine;  // null: the job's collective keeps the sums
  std::string reason;                       // why, for the log: "libnccl.so.2 not found (...)"
};

// Called by every rank of a job at once (it holds collectives): loads
// `library` ("": the backend's), and when every rank could, opens a
// communicator over the job's ranks whose sums go through `memory`'s device
// buffers. `ordered` (train.ordered_reduce) keeps the rank-ordered MPI sum.
// Throws kaio::Error naming the NCCL call when one fails.
AllreduceChoice choose_allreduce(Collective& job, Backend& memory, bool ordered, const std::string& library = "");

}  // namespace kaio::train
