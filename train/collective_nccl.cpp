// NCCL/RCCL loaded at run time (train/collective_nccl.h). The declarations
// below are the C API of nccl.h (RCCL's is the same), as far as kaio uses it.
#include "train/collective_nccl.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace kaio::train {
namespace {

struct NcclComm;  // opaque
using NcclResult = int;
constexpr NcclResult kNcclSuccess = 0;
constexpr int kNcclFloat32 = 7;  // ncclFloat32 in ncclDataType_t
constexpr int kNcclSum = 0;      // ncclSum in ncclRedOp_t
struct NcclUniqueId {
  char internal[128];
};

// The entry points kaio calls, resolved by name.
struct NcclApi {
  NcclResult (*get_unique_id)(NcclUniqueId*) = nullptr;
  NcclResult (*comm_init_rank)(NcclComm**, int, NcclUniqueId, int) = nullptr;
  NcclResult (*all_reduce)(const void*, void*, size_t, int, int, NcclComm*, void* stream) = nullptr;
  NcclResult (*comm_destroy)(NcclComm*) = nullptr;
  const char* (*error_string)(NcclResult) = nullptr;
};

struct LibraryCloser {
  void operator()(void* handle) const noexcept { dlclose(handle); }
};
using Library = std::unique_ptr<void, LibraryCloser>;

struct CommDestroyer {
  NcclResult (*destroy)(NcclComm*) = nullptr;
  void operator()(NcclComm* comm) const noexcept {
    if (destroy) destroy(comm);
  }
};
using Comm = std::unique_ptr<NcclComm, CommDestroyer>;

// Resolves `name` into `fn`; false (and why in `missing`) when the library lacks it.
template <typename Fn>
bool resolve(void* handle, const char* name, Fn& fn, std::string& missing) {
  fn = reinterpret_cast<Fn>(dlsym(handle, name));
  if (!fn && missing.empty()) missing = name;
  return fn != nullptr;
}

struct Loaded {
  Library library;
  NcclApi api;
};

// The library and its entry points, or why not.
std::unique_ptr<Loaded> load(const std::string& name, std::string& reason) {
  Library library(dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (!library) {
    const char* error = dlerror();
    reason = name + " not found (" + (error ? error : "dlopen failed") + ")";
    return nullptr;
  }
  auto loaded = std::make_unique<Loaded>();
  std::string missing;
  void* h = library.get();
  NcclApi& a = loaded->api;
  resolve(h, "ncclGetUniqueId", a.get_unique_id, missing);
  resolve(h, "ncclCommInitRank", a.comm_init_rank, missing);
  resolve(h, "ncclAllReduce", a.all_reduce, missing);
  resolve(h, "ncclCommDestroy", a.comm_destroy, missing);
  resolve(h, "ncclGetErrorString", a.error_string, missing);
  if (!missing.empty()) {
    reason = name + " has no " + missing;
    return nullptr;
  }
  loaded->library = std::move(library);
  return loaded;
}

// Sums of host arrays through a device buffer: to the device, ncclAllReduce
// in place on the default stream (the backend's streams wait for it), back.
class NcclAllreduce final : public DeviceAllreduce {
 public:
  NcclAllreduce(std::unique_ptr<Loaded> loaded, Comm comm, Backend& memory, std::string name)
      : loaded_(std::move(loaded)), comm_(std::move(comm)), memory_(memory), name_(std::move(name)) {}
  NcclAllreduce(const NcclAllreduce&) = delete;
  NcclAllreduce& operator=(const NcclAllreduce&) = delete;
  ~NcclAllreduce() override {
    buffer_.reset();  // device memory, then the communicator, then the library
    comm_.reset();
  }

  std::string engine() const override { return name_ + " (device memory)"; }

  void sum(float* data, size_t n) override {
    if (n > capacity_) {
      buffer_ = allocate_buffer<float>(memory_, n);
      capacity_ = n;
    }
    memory_.to_device(buffer_.get(), data, n * sizeof(float));
    check(loaded_->api.all_reduce(buffer_.get(), buffer_.get(), n, kNcclFloat32, kNcclSum, comm_.get(), nullptr),
          "ncclAllReduce");
    memory_.to_host(data, buffer_.get(), n * sizeof(float));
  }

 private:
  void check(NcclResult rc, const char* call) const {
    if (rc == kNcclSuccess) return;
    throw Error(ErrorKind::transient, name_ + ": " + call + " failed: " + loaded_->api.error_string(rc));
  }

  std::unique_ptr<Loaded> loaded_;
  Comm comm_;
  Backend& memory_;
  std::string name_;
  BackendBuffer<float> buffer_;
  size_t capacity_ = 0;
};

// Rank 0's unique id on every rank: a sum where the other ranks add zeros
// (exact on integers; the collective has no byte broadcast).
NcclUniqueId share_unique_id(Collective& job, const NcclApi& api) {
  NcclUniqueId id{};
  if (job.rank() == 0) {
    NcclResult rc = api.get_unique_id(&id);
    if (rc != kNcclSuccess)
      throw Error(ErrorKind::transient, std::string("ncclGetUniqueId failed: ") + api.error_string(rc));
  }
  int64_t words[sizeof(NcclUniqueId) / sizeof(int64_t)] = {};
  std::memcpy(words, &id, sizeof id);
  job.allreduce_sum(words, std::size(words));
  std::memcpy(&id, words, sizeof id);
  return id;
}

}  // namespace

std::string device_allreduce_library(const std::string& backend) {
  if (backend == "cuda") return "libnccl.so.2";
  if (backend == "hip") return "librccl.so";
  return "";
}

AllreduceChoice choose_allreduce(Collective& job, Backend& memory, bool ordered, const std::string& library) {
  const std::string name = library.empty() ? device_allreduce_library(memory.name()) : library;
  AllreduceChoice choice;
  std::unique_ptr<Loaded> loaded;
  if (name.empty())
    choice.reason = memory.name() + " backend";
  else if (ordered)
    choice.reason = "train.ordered_reduce asks for the rank-ordered sum";
  else
    loaded = load(name, choice.reason);
  // Every rank sums the same way, or their collectives would not meet.
  int64_t everyone = loaded ? 1 : 0;
  job.allreduce_min(&everyone, 1);
  if (!everyone) {
    if (loaded) choice.reason = "another rank of the job cannot use " + name;
    return choice;
  }
  const NcclUniqueId id = share_unique_id(job, loaded->api);
  NcclComm* raw = nullptr;
  NcclResult rc = loaded->api.comm_init_rank(&raw, job.world(), id, job.rank());
  if (rc != kNcclSuccess)
    throw Error(ErrorKind::transient, name + ": ncclCommInitRank failed: " + loaded->api.error_string(rc));
  Comm comm(raw, CommDestroyer{loaded->api.comm_destroy});
  const bool rccl = std::filesystem::path(name).filename().string().find("rccl") != std::string::npos;
  const std::string engine = rccl ? "rccl" : "nccl";
  choice.reason = name + " loaded";
  choice.engine = std::make_unique<NcclAllreduce>(std::move(loaded), std::move(comm), memory, engine);
  return choice;
}

}  // namespace kaio::train
