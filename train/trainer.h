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
  double grad_norm;              // before clipping
  double compute_seconds;        // GPU backends: the device's time from the step's begin to its end
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
  //
  // A caller that overlaps feeding with the GPU's work calls stage(n+1)
  // between begin_step() and finish_step() of step n: the device then never
  // waits for the host between steps. The mask of a staged batch is that of
  // the step it will be trained at (steps_done() + 1 if a step is in flight).

  // Copies `batch` windows (the caller's buffer is free on return) and starts their upload
  // (GPU: pinned buffer, copy stream, into the device buffer the step in flight is not using);
  // the next begin_step() trains on them. At most one staged batch at a time.
  virtual void stage(const uint8_t* windows, int batch) = 0;
  // Starts the optimizer step on the staged batch: GPU backends enqueue it and return without
  // waiting for the device; the cpu backend computes it here. One step in flight at a time.
  // In a job of several ranks the step runs whole here (the all-reduce needs the gradients).
  virtual void begin_step() = 0;
  // Waits for the step begun last and returns its figures (throws kaio::Error(internal) on a
  // non-finite loss or gradient; the weights are then left as they were).
  virtual StepResult finish_step() = 0;
  // stage + begin_step + finish_step (tests, benchmarks, callers that do not overlap).
  StepResult step(const uint8_t* windows, int batch);
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
  // Weights as .safetensors, named like the PyTorch module in tests/train/make_reference.py;
  // between steps only, like the checkpoints.
  virtual void export_safetensors(const std::filesystem::path& path) const = 0;

  virtual Throughput throughput() const = 0;
  // The dense peak FLOP/s of the backend's device for the step's dtype
  // (train/throughput.h); 0 when unknown.
  virtual double peak_flops() const = 0;
  // The share of time the device waited for the next step: on GPU backends its
  // idle time between one step's end and the next one's begin (events) over
  // idle plus busy; on the cpu backend the host's noted data waits over those
  // plus step time.
  virtual double data_wait_fraction() const = 0;
  // Host time spent waiting for data (the cpu backend's data-wait figure; GPU
  // backends measure the device's idle time instead).
  virtual void note_data_wait(double seconds) = 0;
  virtual ~Trainer() = default;
};

// Learning rate at 0-based `step`: linear warmup to `lr`, then cosine decay to
// zero at max_steps; with max_steps == 0 it stays at `lr` after warmup.
double learning_rate(const kaio::TrainConfig& config, int64_t step);

}  // namespace kaio::train
