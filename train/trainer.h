#pragma once
// The trainer kaiod drives: one optimizer step per batch of windows,
// checkpoints that include the caller's plan cursor, and weight export.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/config.h"
#include "train/collective.h"

namespace kaio::train {

struct StepResult {
  double loss;
  double lr;
  double grad_norm;  // before clipping
  double compute_seconds;
  double allreduce_seconds = 0;  // of compute_seconds: summing over the ranks (0 alone)
};

// Averages over the last train.log_every steps (the steps so far before the
// first log_every): what status.train and the trainer's log line show.
struct Throughput {
  double step_seconds = 0;       // per optimizer step, all-reduce included
  double tokens_per_second = 0;  // this rank's tokens, masked ones included (the encoder sees them all)
  double mfu = -1;               // model FLOPs per second over the device's peak; -1 unknown (cpu, unlisted GPU)
};

class Trainer {
 public:
  // backend "auto" picks hip, then cuda, then cpu; with no GPU it picks cpu and
  // backend_note() says why ("no GPU found: using cpu backend").
  // `job`: the ranks of a data-parallel job (null: this process alone).
  static std::unique_ptr<Trainer> create(const kaio::TrainConfig& config, int frames, int size,
                                         std::shared_ptr<Collective> job = nullptr);

  virtual std::string backend() const = 0;
  virtual std::string backend_note() const = 0;
  // One optimizer step on `batch` windows of frames x size x size x 3 bytes; batch <= batch_size.
  // In a job of several ranks every rank calls it together: the step is the
  // mean over the union of the ranks' batches (a rank may bring 0 windows;
  // the loss is the global one). Rank r masks its windows as samples
  // r*batch_size.. of the global batch, so with full batches the masks are
  // those of one rank stepping on all of them.
  virtual StepResult step(const uint8_t* windows, int batch) = 0;
  // Every rank takes rank 0's weights, AdamW moments and step; throws
  // kaio::Error(corrupt) on every rank when the ranks resumed at different
  // steps. Call on every rank after start-up's resume. Alone: nothing.
  virtual void join_job() = 0;
  virtual int64_t steps_done() const = 0;

  // Size of the checkpoint file with an empty `extra`; the file is exactly
  // checkpoint_bytes() + extra.size() bytes.
  virtual uint64_t checkpoint_bytes() const = 0;
  // Model, AdamW state, step and `extra`, written durably (tmp, fsync, rename).
  virtual void save_checkpoint(const std::filesystem::path& path, const std::string& extra) = 0;
  // Throws kaio::Error(corrupt) naming the file when it is damaged or for another model.
  virtual std::string load_checkpoint(const std::filesystem::path& path) = 0;
  // Weights as .safetensors, named like the PyTorch module in tests/train/make_reference.py.
  virtual void export_safetensors(const std::filesystem::path& path) const = 0;

  virtual Throughput throughput() const = 0;
  // The dense peak FLOP/s of the backend's device for the step's dtype
  // (train/throughput.h); 0 when unknown.
  virtual double peak_flops() const = 0;
  virtual double data_wait_fraction() const = 0;
  virtual void note_data_wait(double seconds) = 0;
  virtual ~Trainer() = default;
};

// Learning rate at 0-based `step`: linear warmup to `lr`, then cosine decay to
// zero at max_steps; with max_steps == 0 it stays at `lr` after warmup.
double learning_rate(const kaio::TrainConfig& config, int64_t step);

}  // namespace kaio::train
