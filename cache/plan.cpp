#include "cache/plan.h"

#include <charconv>
#include <type_traits>
#include <utility>

#include "common/error.h"

namespace kaio::cache {
namespace {

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// SplitMix64: a tiny generator whose output is fixed by its seed on every platform.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() { return mix64(state_ += 0x9e3779b97f4a7c15ull); }
  // Uniform in [0, n) by rejection, so no modulo bias.
  uint64_t below(uint64_t n) {
    uint64_t threshold = (0 - n) % n;
    for (;;) {
      uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }

 private:
  uint64_t state_;
};

// One independent stream per (seed, purpose, values...).
SplitMix64 stream(uint64_t seed, std::initializer_list<uint64_t> values) {
  uint64_t s = mix64(seed + 0x6a09e667f3bcc909ull);
  for (uint64_t v : values) s = mix64(s ^ mix64(v + 0x9e3779b97f4a7c15ull));
  return SplitMix64(s);
}

template <typename T>
void fisher_yates(std::vector<T>& items, SplitMix64& rng) {
  for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rng.below(i)]);
}

constexpr uint64_t kFileOrder = 1;
constexpr uint64_t kChunkWindows = 2;

}  // namespace

std::vector<size_t> file_order(uint64_t seed, int epoch, size_t n_files) {
  std::vector<size_t> order(n_files);
  for (size_t i = 0; i < n_files; ++i) order[i] = i;
  auto rng = stream(seed, {kFileOrder, static_cast<uint64_t>(epoch)});
  fisher_yates(order, rng);
  return order;
}

std::vector<WindowRef> chunk_windows(uint64_t seed, int epoch, int64_t chunk_index, int pass,
                                     const std::vector<ClipWindows>& clips) {
  std::vector<WindowRef> windows;
  for (const auto& c : clips)
    for (int64_t w = 0; w < c.windows; ++w) windows.push_back({c.clip, w});
  auto rng = stream(seed, {kChunkWindows, static_cast<uint64_t>(epoch), static_cast<uint64_t>(chunk_index),
                           static_cast<uint64_t>(pass)});
  fisher_yates(windows, rng);
  return windows;
}

// ---------------------------------------------------------------- cursor text

std::string PlanCursor::to_string() const {
  return "v2 epoch=" + std::to_string(epoch) + " file=" + std::to_string(file_pos) +
         " chunk=" + std::to_string(chunk_index) + " first=" + std::to_string(first_clip) +
         " clips=" + std::to_string(chunk_clips) + " window=" + std::to_string(window_pos) +
         " pass=" + std::to_string(pass);
}

namespace {

template <typename T>
void parse_field(std::string_view& rest, std::string_view key, T& out, std::string_view whole) {
  auto bad = [&] {
    throw Error(ErrorKind::corrupt, "plan cursor '" + std::string(whole) + "': bad " + std::string(key));
  };
  bool may_be_unknown = key == "first";  // -1 before the first chunk of a v2 epoch
  if (rest.substr(0, 1) != " ") bad();
  rest.remove_prefix(1);
  if (rest.substr(0, key.size()) != key || rest.substr(key.size(), 1) != "=") bad();
  rest.remove_prefix(key.size() + 1);
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), out);
  if (ec != std::errc()) bad();
  if constexpr (std::is_signed_v<T>) {
    if (out < (may_be_unknown ? -1 : 0)) bad();
  }
  rest.remove_prefix(static_cast<size_t>(end - rest.data()));
}

}  // namespace

PlanCursor PlanCursor::parse(std::string_view text) {
  std::string_view rest = text;
  bool v2 = rest.substr(0, 2) == "v2";
  if (!v2 && rest.substr(0, 2) != "v1")
    throw Error(ErrorKind::corrupt, "plan cursor '" + std::string(text) + "': not v1 or v2");
  rest.remove_prefix(2);
  PlanCursor c;
  parse_field(rest, "epoch", c.epoch, text);
  parse_field(rest, "file", c.file_pos, text);
  parse_field(rest, "chunk", c.chunk_index, text);
  if (v2) {
    parse_field(rest, "first", c.first_clip, text);
    parse_field(rest, "clips", c.chunk_clips, text);
  }
  parse_field(rest, "window", c.window_pos, text);
  parse_field(rest, "pass", c.pass, text);
  if (!rest.empty()) throw Error(ErrorKind::corrupt, "plan cursor '" + std::string(text) + "': trailing text");
  return c;
}

// ---------------------------------------------------------------- window sequence

WindowSequence::WindowSequence(uint64_t seed, int shuffle_clips, int repeat, PlanCursor start, ChunkListener on_chunk,
                               uint64_t chunk_bytes_cap)
    : seed_(seed),
      shuffle_clips_(static_cast<size_t>(shuffle_clips > 0 ? shuffle_clips : 1)),
      repeat_(repeat > 0 ? repeat : 1),
      cursor_(start),
      on_chunk_(std::move(on_chunk)),
      chunk_bytes_cap_(chunk_bytes_cap),
      skip_below_(start.first_clip >= 0 ? start.first_clip : start.chunk_index * static_cast<int64_t>(shuffle_clips_)),
      resume_chunk_clips_(start.chunk_clips) {
  cursor_.first_clip = skip_below_;
}

void WindowSequence::release(ClipWindows clip) {
  if (released_++ >= skip_below_) pending_.push_back(std::move(clip));
}

void WindowSequence::add_clip(ClipWindows clip) {
  if (clip.file_pos < next_file_ || complete_.count(clip.file_pos))
    throw Error(ErrorKind::internal, "plan: clip " + clip.clip + " arrived after its file (position " +
                                         std::to_string(clip.file_pos) + ") was complete");
  windows_added_ += clip.windows;
  if (clip.file_pos == next_file_)
    release(std::move(clip));
  else
    waiting_[clip.file_pos].push_back(std::move(clip));
}

void WindowSequence::file_complete(size_t file_pos) {
  complete_.insert(file_pos);
  release_completed_files();
}

// Moves the plan forward over every complete file, releasing the clips of the
// file that becomes first.
void WindowSequence::release_completed_files() {
  while (complete_.count(next_file_)) {
    complete_.erase(next_file_);
    ++next_file_;
    auto it = waiting_.find(next_file_);
    if (it == waiting_.end()) continue;
    for (auto& c : it->second) release(std::move(c));
    waiting_.erase(it);
  }
}

void WindowSequence::finish_epoch() {
  finished_ = true;
  for (auto& [pos, clips] : waiting_)
    for (auto& c : clips) release(std::move(c));
  waiting_.clear();
}

WindowSequence::Progress WindowSequence::progress() const {
  Progress p;
  p.files_complete = static_cast<int64_t>(next_file_ + complete_.size());
  p.windows_added = windows_added_ * repeat_;
  auto windows_of = [](const auto& clips) {
    int64_t n = 0;
    for (const auto& c : clips) n += c.windows;
    return n;
  };
  p.windows_left = windows_of(pending_) * repeat_;
  for (const auto& [pos, clips] : waiting_) p.windows_left += windows_of(clips) * repeat_;
  if (!chunk_.empty()) p.windows_left += windows_of(chunk_) * (repeat_ - cursor_.pass) - cursor_.window_pos;
  return p;
}

bool WindowSequence::epoch_done() const {
  return finished_ && pending_.empty() && chunk_.empty();
}

// How many pending clips the next chunk takes; 0 while it cannot form yet.
// A resumed chunk takes the count it had; otherwise K clips, fewer when the
// byte cap is reached first, or what is left at the epoch's end.
size_t WindowSequence::chunk_size_ready() const {
  if (resume_chunk_clips_ > 0) {
    size_t n = static_cast<size_t>(resume_chunk_clips_);
    if (pending_.size() >= n) return n;
    return finished_ ? pending_.size() : 0;
  }
  uint64_t bytes = 0;
  for (size_t n = 0; n < pending_.size() && n < shuffle_clips_; ++n) {
    bytes += pending_[n].bytes;
    if (n + 1 == shuffle_clips_ || (chunk_bytes_cap_ > 0 && bytes >= chunk_bytes_cap_)) return n + 1;
  }
  return finished_ ? pending_.size() : 0;
}

bool WindowSequence::form_chunk() {
  size_t n = chunk_size_ready();
  if (n == 0) return false;
  resume_chunk_clips_ = 0;
  cursor_.chunk_clips = static_cast<int64_t>(n);
  chunk_.assign(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
  cursor_.file_pos = chunk_.front().file_pos;
  order_ = chunk_windows(seed_, cursor_.epoch, cursor_.chunk_index, cursor_.pass, chunk_);
  if (on_chunk_) on_chunk_(cursor_.epoch, cursor_.chunk_index, chunk_);
  return true;
}

// Moves the cursor past a finished pass (and a finished chunk), so a cursor saved
// after the last window of a chunk already points at the next chunk.
void WindowSequence::advance_if_pass_done() {
  while (!chunk_.empty() && cursor_.window_pos >= static_cast<int64_t>(order_.size())) {
    cursor_.window_pos = 0;
    if (++cursor_.pass >= repeat_) {
      cursor_.pass = 0;
      ++cursor_.chunk_index;
      cursor_.first_clip += static_cast<int64_t>(chunk_.size());
      cursor_.chunk_clips = 0;
      chunk_.clear();
      order_.clear();
    } else {
      order_ = chunk_windows(seed_, cursor_.epoch, cursor_.chunk_index, cursor_.pass, chunk_);
    }
  }
}

std::optional<WindowRef> WindowSequence::next() {
  for (;;) {
    if (chunk_.empty() && !form_chunk()) return std::nullopt;
    advance_if_pass_done();  // a chunk without windows, or a resumed cursor at a pass end
    if (chunk_.empty()) continue;
    WindowRef w = order_[static_cast<size_t>(cursor_.window_pos++)];
    advance_if_pass_done();
    return w;
  }
}

}  // namespace kaio::cache
