#include "train/trainer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <vector>

#include "common/error.h"
#include "common/fs.h"
#include "train/backend.h"
#include "train/collective_nccl.h"
#include "train/model.h"
#include "train/safetensors.h"
#include "train/throughput.h"
#include "train/trainer_internal.h"

namespace kaio::train {
namespace {

constexpr char kCheckpointMagic[8] = {'K', 'A', 'I', 'O', 'C', 'K', 'P', '1'};
constexpr int kHeaderWords = 9;  // dim depth heads tubelet_frames tubelet_size frames size params step

// Order-dependent 64-bit checksum over whole words, cheap enough for 100s of MB.
uint64_t checksum(const std::string& data, size_t end) {
  uint64_t h = 0xcbf29ce484222325ULL;
  size_t i = 0;
  for (; i + 8 <= end; i += 8) {
    uint64_t w;
    std::memcpy(&w, data.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  for (; i < end; ++i) h = (h ^ static_cast<unsigned char>(data[i])) * 0x100000001b3ULL;
  return h;
}

void put_u64(std::string& out, uint64_t v) {
  out.append(reinterpret_cast<const char*>(&v), 8);
}
uint64_t get_u64(const std::string& in, size_t at) {
  uint64_t v;
  std::memcpy(&v, in.data() + at, 8);
  return v;
}

std::unique_ptr<Backend> pick_backend(const TrainConfig& config, std::string& note) {
  const std::string& wanted = config.backend;
  const int threads = config.threads;
  if (wanted == "cpu") return make_cpu_backend(threads);
  if (wanted == "hip" || wanted == "cuda") {
    std::string why;
    auto backend = make_gpu_backend(wanted, config.bf16, why);
    if (!backend) throw Error(ErrorKind::config, "train.backend: '" + wanted + "' is unavailable: " + why);
    return backend;
  }
  if (wanted != "auto")
    throw Error(ErrorKind::config, "train.backend: unknown backend '" + wanted + "' (auto, hip, cuda, cpu)");
  std::string why_hip, why_cuda;
  if (auto hip = make_gpu_backend("hip", config.bf16, why_hip)) return hip;
  if (auto cuda = make_gpu_backend("cuda", config.bf16, why_cuda)) return cuda;
  note = "no GPU found: using cpu backend (hip: " + why_hip + "; cuda: " + why_cuda + ")";
  return make_cpu_backend(threads);
}

int checked_batch_size(const TrainConfig& config) {
  if (config.batch_size <= 0)
    throw Error(ErrorKind::config, "train.batch_size must be positive, got " + std::to_string(config.batch_size));
  return config.batch_size;
}

class ModelTrainer final : public Trainer, public TrainerInternals {
 public:
  ModelTrainer(const TrainConfig& config, int frames, int size, std::shared_ptr<Collective> job)
      : config_(config),
        job_(job ? std::move(job) : make_single_collective()),
        backend_(pick_backend(config, note_)),
        model_(*backend_, model_spec(config.model), make_grid(model_spec(config.model), frames, size),
               checked_batch_size(config)),
        peak_flops_(train::peak_flops(backend_->device_name(), config.bf16 && backend_->name() != "cpu")) {
    model_.init_weights(config.seed);
    spdlog::info("trainer: model {} ({} parameters), window {}x{}x{}, {} tokens, backend {} on {}{}, peak {}",
                 config.model, model_.param_count(), frames, size, size, model_.grid().tokens(), backend_->name(),
                 backend_->device_name(), note_.empty() ? "" : " (" + note_ + ")",
                 peak_flops_ > 0 ? fmt::format("{:.1f} TFLOP/s", peak_flops_ / 1e12) : "unknown (MFU not reported)");
  }

  ModelTrainer(const ModelTrainer&) = delete;
  ModelTrainer& operator=(const ModelTrainer&) = delete;
  ~ModelTrainer() override {
    if (carries_sums_) job_->carry_float_sums(nullptr);  // its device buffers go with this backend
  }

  std::string backend() const override { return backend_->name(); }
  std::string backend_note() const override { return note_; }
  int64_t steps_done() const override { return steps_; }
  Model& model() override { return model_; }

  void stage(const uint8_t* windows, int batch) override {
    if (staged_) throw Error(ErrorKind::internal, "stage: a batch is already staged");
    if (batch < 0 || batch > config_.batch_size)
      throw Error(ErrorKind::internal, "batch of " + std::to_string(batch) + " windows exceeds train.batch_size " +
                                           std::to_string(config_.batch_size));
    if (batch > 0) {
      // Rank r's windows are samples r*batch_size.. of the global batch: their masks are drawn as such.
      const int first = job_->rank() * config_.batch_size;
      const int64_t at = steps_ + (in_flight_ ? 1 : 0);
      const auto mask = tube_mask(model_.grid(), first + batch, config_.mask_ratio, config_.seed, at);
      model_.stage(windows, mask.data() + static_cast<size_t>(first) * model_.grid().tokens(), batch);
    }
    staged_ = true;
    staged_batch_ = batch;
  }

  void begin_step() override {
    if (!staged_) throw Error(ErrorKind::internal, "begin_step without a staged batch");
    if (in_flight_)
      throw Error(ErrorKind::internal, "begin_step while step " + std::to_string(steps_) + " is in flight");
    staged_ = false;
    const auto start = std::chrono::steady_clock::now();
    flight_ = {staged_batch_, learning_rate(config_, steps_), 0, 0};
    backend_->mark_step_begin();
    if (flight_.batch > 0) model_.forward_backward();
    if (job_->world() > 1) {
      const double loss = flight_.batch > 0 ? model_.read_figures().loss : 0.0;
      const auto reduce_start = std::chrono::steady_clock::now();
      model_.write_loss(reduce_over_ranks(flight_.batch, loss));
      flight_.reduce_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - reduce_start).count();
    } else if (flight_.batch == 0) {
      model_.write_loss(0.0);
    }
    model_.grad_figures(config_.grad_clip);
    model_.adamw_step(static_cast<float>(flight_.lr), static_cast<float>(config_.weight_decay), steps_ + 1);
    backend_->mark_step_end();
    // The cpu backend's step time: it computed the whole step here.
    flight_.host_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    in_flight_ = true;
  }

  StepResult finish_step() override {
    if (!in_flight_) throw Error(ErrorKind::internal, "finish_step without a step in flight");
    in_flight_ = false;
    const StepFigures figures = model_.read_figures();
    double seconds = flight_.host_seconds;
    if (backend_->device_clock()) {
      const DeviceStepTime time = backend_->step_time();
      seconds = time.busy_seconds;
      wait_seconds_ += time.idle_seconds;
    }
    if (!figures.finite)
      throw Error(ErrorKind::internal, "step " + std::to_string(steps_) + ": loss or gradient is not finite");
    ++steps_;
    compute_seconds_ += seconds;
    count_throughput(flight_.batch, seconds, figures.loss);
    return {figures.loss, flight_.lr, figures.grad_norm, seconds, flight_.reduce_seconds};
  }

  void join_job() override {
    require_no_step_in_flight("join_job");
    if (job_->world() == 1) return;
    int64_t steps[2] = {job_->rank() == 0 ? steps_ : 0, 0};
    job_->allreduce_sum(steps, 1);
    steps[1] = steps[0] != steps_ ? 1 : 0;
    job_->allreduce_sum(steps + 1, 1);
    if (steps[1] > 0)
      throw Error(ErrorKind::corrupt, "the ranks resumed at different steps (rank 0 at " + std::to_string(steps[0]) +
                                          ", rank " + std::to_string(job_->rank()) + " at " + std::to_string(steps_) +
                                          "): each rank's latest checkpoint must be of the same step");
    const size_t n = model_.param_count();
    std::vector<float> params(n), m(n), v(n);
    model_.read_params(params.data());
    model_.read_moments(m.data(), v.data());
    for (auto* buf : {&params, &m, &v}) job_->broadcast(buf->data(), n, 0);
    model_.write_params(params.data());
    model_.write_moments(m.data(), v.data());
    spdlog::info("trainer: rank {} of {} holds rank 0's model at step {}", job_->rank(), job_->world(), steps_);
    choose_gradient_allreduce();
  }

  uint64_t checkpoint_bytes() const override {
    return sizeof(kCheckpointMagic) + 8 * size_t{kHeaderWords} + 3 * sizeof(float) * model_.param_count() + 8 + 8;
  }

  void save_checkpoint(const std::filesystem::path& path, const std::string& extra) override {
    require_no_step_in_flight("save_checkpoint");
    const size_t n = model_.param_count();
    std::vector<float> params(n), m(n), v(n);
    model_.read_params(params.data());
    model_.read_moments(m.data(), v.data());
    std::string out(kCheckpointMagic, sizeof(kCheckpointMagic));
    out.reserve(checkpoint_bytes() + extra.size());
    for (uint64_t word : header_words()) put_u64(out, word);
    for (const auto* buf : {&params, &m, &v}) out.append(reinterpret_cast<const char*>(buf->data()), n * 4);
    put_u64(out, checksum(out, out.size()));
    put_u64(out, extra.size());
    out += extra;
    write_file_durably(path, out);
    spdlog::info("trainer: checkpoint {} at step {} ({} bytes)", path.string(), steps_, out.size());
  }

  std::string load_checkpoint(const std::filesystem::path& path) override {
    require_no_step_in_flight("load_checkpoint");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(ErrorKind::io, "cannot open checkpoint " + path.string());
    const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t base = checkpoint_bytes();
    const size_t n = model_.param_count(), payload_end = base - 16;
    if (data.size() < base || std::memcmp(data.data(), kCheckpointMagic, 8) != 0)
      throw Error(ErrorKind::corrupt, "checkpoint " + path.string() + ": not a kaio checkpoint of this model size");
    const auto want = header_words();
    for (int i = 0; i < kHeaderWords - 1; ++i)
      if (get_u64(data, 8 + 8 * i) != want[i])
        throw Error(ErrorKind::corrupt, "checkpoint " + path.string() + ": written for another model or window size");
    if (get_u64(data, payload_end) != checksum(data, payload_end))
      throw Error(ErrorKind::corrupt, "checkpoint " + path.string() + ": checksum mismatch");
    const uint64_t extra_size = get_u64(data, payload_end + 8);
    if (data.size() != base + extra_size)
      throw Error(ErrorKind::corrupt, "checkpoint " + path.string() + ": size does not match its extra length");
    const char* floats = data.data() + 8 + 8 * size_t{kHeaderWords};
    std::vector<float> params(n), m(n), v(n);
    std::memcpy(params.data(), floats, n * 4);
    std::memcpy(m.data(), floats + n * 4, n * 4);
    std::memcpy(v.data(), floats + 2 * n * 4, n * 4);
    model_.write_params(params.data());
    model_.write_moments(m.data(), v.data());
    steps_ = static_cast<int64_t>(get_u64(data, 8 + 8 * (kHeaderWords - 1)));
    spdlog::info("trainer: loaded checkpoint {} at step {} ({} bytes)", path.string(), steps_, data.size());
    return data.substr(base);
  }

  void export_safetensors(const std::filesystem::path& path) const override {
    require_no_step_in_flight("export_safetensors");
    std::vector<float> params(model_.param_count());
    model_.read_params(params.data());
    TensorMap tensors;
    for (const ParamInfo& info : model_.params())
      tensors.emplace(info.name, f32_tensor(params.data() + info.offset, info.shape));
    const auto& s = model_.spec();
    const auto& g = model_.grid();
    const std::map<std::string, std::string> meta{
        {"model", s.name},
        {"dim", std::to_string(s.dim)},
        {"depth", std::to_string(s.depth)},
        {"heads", std::to_string(s.heads)},
        {"tubelet", std::to_string(s.tubelet_frames) + "x" + std::to_string(s.tubelet_size)},
        {"frames", std::to_string(g.frames)},
        {"size", std::to_string(g.size)},
        {"step", std::to_string(steps_)}};
    write_file_durably(path, encode_safetensors(tensors, meta));
    spdlog::info("trainer: exported weights to {} at step {}", path.string(), steps_);
  }

  Throughput throughput() const override { return throughput_; }
  double peak_flops() const override { return peak_flops_; }
  double data_wait_fraction() const override {
    const double total = wait_seconds_ + compute_seconds_;
    return total > 0 ? wait_seconds_ / total : 0.0;
  }
  void note_data_wait(double seconds) override {
    if (!backend_->device_clock()) wait_seconds_ += seconds;
  }

 private:
  // The model and steps_ agree only between steps.
  void require_no_step_in_flight(const char* what) const {
    if (in_flight_)
      throw Error(ErrorKind::internal, std::string(what) + " while a step is in flight (finish_step first)");
  }
  std::array<uint64_t, kHeaderWords> header_words() const {
    const auto& s = model_.spec();
    const auto& g = model_.grid();
    return {uint64_t(s.dim),          uint64_t(s.depth),  uint64_t(s.heads), uint64_t(s.tubelet_frames),
            uint64_t(s.tubelet_size), uint64_t(g.frames), uint64_t(g.size),  model_.param_count(),
            uint64_t(steps_)};
  }

  // Sums over the current window of log_every steps; status shows the last
  // whole window's figures (the current one's until the first is whole).
  void count_throughput(int batch, double seconds, double loss) {
    window_.steps += 1;
    window_.seconds += seconds;
    window_.tokens += static_cast<double>(batch) * model_.grid().tokens();
    window_.flops += batch > 0 ? step_flops(model_.spec(), model_.grid(), batch) : 0.0;
    const bool whole = window_.steps >= config_.log_every;
    if (whole || !logged_window_) throughput_ = window_figures();
    if (!whole) return;
    spdlog::info("trainer: step {} loss {:.4f}, {:.4f} s a step, {:.0f} tokens/s, MFU {} (mean of {} steps)", steps_,
                 loss, throughput_.step_seconds, throughput_.tokens_per_second,
                 throughput_.mfu >= 0 ? fmt::format("{:.1f}%", 100 * throughput_.mfu) : "unknown", window_.steps);
    window_ = {};
    logged_window_ = true;
  }
  Throughput window_figures() const {
    const double secs = window_.seconds > 0 ? window_.seconds : 1e-9;
    return {window_.seconds / window_.steps, window_.tokens / secs,
            peak_flops_ > 0 ? window_.flops / secs / peak_flops_ : -1.0};
  }

  // NCCL or RCCL for the gradient sums on GPUs when every rank has them,
  // else the job's MPI collective; the log says which and why.
  void choose_gradient_allreduce() {
    auto choice = choose_allreduce(*job_, *backend_, config_.ordered_reduce);
    if (choice.engine) {
      job_->carry_float_sums(std::move(choice.engine));
      carries_sums_ = true;
    }
    spdlog::info("job: all-reduce over {}: {}", job_->engine(), choice.reason);
  }

  // Replaces this rank's gradient with the global batch's: each rank's mean
  // gradient weighted by its share of the global batch, summed over the
  // ranks. Returns the global batch's loss; `batch` 0 contributes nothing.
  double reduce_over_ranks(int batch, double loss) {
    double counts[2] = {static_cast<double>(batch), loss * batch};
    job_->allreduce_sum(counts, 2);
    if (counts[0] == 0)
      throw Error(ErrorKind::internal, "step " + std::to_string(steps_) + " with no window on any rank");
    grads_.assign(model_.param_count(), 0.0f);
    if (batch > 0) {
      model_.read_grads(grads_.data());
      const auto share = static_cast<float>(batch / counts[0]);
      if (share != 1.0f)
        for (float& g : grads_) g *= share;
    }
    job_->allreduce_sum(grads_.data(), grads_.size());
    model_.write_grads(grads_.data());
    return counts[1] / counts[0];
  }

  TrainConfig config_;
  std::shared_ptr<Collective> job_;
  std::vector<float> grads_;   // host copy for the all-reduce
  bool carries_sums_ = false;  // this trainer handed the job's float sums to NCCL or RCCL
  std::string note_;
  std::unique_ptr<Backend> backend_;
  Model model_;
  double peak_flops_;  // of the backend's device for its dtype; 0 unknown
  int64_t steps_ = 0;
  // Device time on GPU backends (busy steps, idle between them), host time on cpu.
  double compute_seconds_ = 0, wait_seconds_ = 0;
  bool staged_ = false, in_flight_ = false;
  int staged_batch_ = 0;
  struct Flight {
    int batch = 0;
    double lr = 0, reduce_seconds = 0, host_seconds = 0;
  } flight_;  // the step begun last
  struct Window {
    int steps = 0;
    double seconds = 0, tokens = 0, flops = 0;
  } window_;
  bool logged_window_ = false;
  Throughput throughput_;
};

}  // namespace

StepResult Trainer::step(const uint8_t* windows, int batch) {
  stage(windows, batch);
  begin_step();
  return finish_step();
}

double learning_rate(const TrainConfig& config, int64_t step) {
  if (step < config.warmup_steps) return config.lr * static_cast<double>(step + 1) / config.warmup_steps;
  if (config.max_steps <= 0) return config.lr;
  const double span = std::max<double>(1.0, static_cast<double>(config.max_steps - config.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - config.warmup_steps) / span);
  return 0.5 * config.lr * (1.0 + std::cos(3.141592653589793 * progress));
}

std::unique_ptr<Trainer> Trainer::create(const TrainConfig& config, int frames, int size,
                                         std::shared_ptr<Collective> job) {
  return std::make_unique<ModelTrainer>(config, frames, size, std::move(job));
}

TrainerInternals& internals(Trainer& trainer) {
  return dynamic_cast<TrainerInternals&>(trainer);
}

}  // namespace kaio::train
