#pragma once
// kaiod's configuration: one JSON file, one struct per section. Every key has a
// default here; load_config() rejects unknown keys and bad values with an error
// that names the file and the key's path (e.g. "storage.budget").
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kaio {

using Millis = std::chrono::milliseconds;

struct SourceConfig {
  std::string endpoint;               // "" = $HF_ENDPOINT, else https://huggingface.co
  std::string repo;                   // "org/name" (a dataset repo)
  std::string revision = "main";      // branch, tag or commit; pinned to a sha on first run
  std::vector<std::string> include;   // globs; empty = everything
  std::vector<std::string> exclude;   // globs
  std::string token_file;             // "" = $HF_TOKEN, $HF_TOKEN_PATH, ~/.cache/huggingface/token
  std::vector<std::string> captions;  // globs of LLaVA-style caption JSON files in the repo
  // Several nodes: this node takes the files at plan positions p with
  // p mod count == index (docs/data-plane.md). count 1 = every file.
  int partition_index = 0;
  int partition_count = 1;
};

struct FetchConfig {
  int parallel_files = 4;                // files downloaded at once
  int split = 4;                         // Range parts per large file
  uint64_t split_min_size = 64'000'000;  // files smaller than this use one connection
  Millis stall_timeout{30'000};          // no byte for this long: abort and resume
  Millis connect_timeout{30'000};
  Millis max_backoff{60'000};        // cap of the exponential retry backoff
  uint64_t bandwidth_limit = 0;      // bytes/s over all transfers, 0 = none
  int api_requests_per_5min = 2500;  // below the anonymous resolver quota of 3000
};

struct StorageConfig {
  std::filesystem::path cache_dir = "/var/cache/kaio";
  std::filesystem::path state_dir = "/var/lib/kaio";
  uint64_t budget = 10'000'000'000;          // bytes under cache_dir + state_dir, never exceeded
  uint64_t free_disk_floor = 1'000'000'000;  // free bytes always left on the filesystem
  uint64_t stream_threshold = 0;             // archives larger than this are decoded while they stream; 0 = budget/4
};

struct DecodeConfig {
  int frames = 16;                            // T: frames per window
  int stride = 16;                            // S: frames between window starts
  double fps = 4.0;                           // sampling rate by presentation time
  int size = 224;                             // output is size x size RGB
  std::string resize = "crop";                // crop | pad | stretch
  bool pad_short = false;                     // pad clips shorter than T frames instead of skipping them
  std::vector<std::string> members{"*.mp4"};  // archive members to decode
  int workers = 2;                            // clips decoded in parallel
  int codec_threads = 1;                      // FFmpeg threads per clip
  uint64_t max_member_size = 8'000'000'000;   // larger members are rejected
  double max_expand_ratio = 1000;             // archive bytes out / bytes in, above = bomb
  Millis timeout{600'000};                    // bound on one clip's decode
};

struct TrainConfig {
  std::string backend = "auto";  // auto | hip | cuda | cpu | external (consumers train: docs/data-plane.md)
  std::string model = "small";   // tiny | small | base
  int batch_size = 8;
  double lr = 1.5e-4;
  double weight_decay = 0.05;
  int warmup_steps = 100;
  double grad_clip = 1.0;
  double mask_ratio = 0.9;
  int epochs = 1;
  int repeat = 1;              // passes over each resident slice before it is deleted
  int64_t max_steps = 0;       // 0 = until the epochs are done
  int checkpoint_every = 200;  // steps
  int log_every = 50;          // steps between the trainer's throughput lines (step time, tokens/s, MFU)
  int keep_checkpoints = 2;
  uint64_t seed = 0;
  int shuffle_clips = 8;  // K: windows are mixed across this many ready clips
  int threads = 0;        // cpu backend threads, 0 = all cores
  bool bf16 = false;      // bf16 compute on GPUs
  // A data-parallel job (docs/multi-rank.md): "auto" joins one when started by
  // mpirun or srun, "mpi" always, "single" never.
  std::string world = "auto";
  bool ordered_reduce = false;  // sum gradients in rank order: the same result whatever MPI's algorithm
};

struct ControlConfig {
  std::filesystem::path socket = "/run/kaio/kaiod.sock";
  std::string admin_group = "kaio";                           // members may pause and resume
  std::filesystem::path data_socket = "/run/kaio/data.sock";  // consumers, with train.backend "external"
};

// Prometheus /metrics over HTTP (daemon/metrics.h).
struct MetricsConfig {
  std::string listen;  // "HOST:PORT" ("127.0.0.1:9464", "[::1]:9464"); "" = off
  std::string host;    // parsed from listen
  int port = 0;        // parsed from listen; 0 = any free port (tests)
};

struct LogConfig {
  std::string level = "info";  // trace | debug | info | warn | error
};

struct Config {
  std::filesystem::path file;  // where it was loaded from
  SourceConfig source;
  FetchConfig fetch;
  StorageConfig storage;
  DecodeConfig decode;
  TrainConfig train;
  ControlConfig control;
  MetricsConfig metrics;
  LogConfig log;
};

// Throws kaio::Error(ErrorKind::config) naming the file and the key.
Config load_config(const std::filesystem::path& file);
Config parse_config(const std::string& json_text, const std::filesystem::path& file_for_messages);

// One rank of a job of `world` (docs/multi-rank.md): "{rank}" in
// storage.cache_dir, storage.state_dir, control.socket and control.data_socket
// becomes the rank, and with world > 1 the source is partitioned by rank
// (source.partition index rank, count world). Throws kaio::Error(config) when
// the config sets source.partition too: nodes and ranks do not compose yet.
void place_rank(Config& config, int rank, int world);

}  // namespace kaio
