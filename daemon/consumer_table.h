#pragma once
// The data plane's consumers as kaiod knows them (docs/data-plane.md): each
// group's world and, per rank, its committed and delivered tokens, the
// worker slots attached and the figures status shows. Plain data: the
// ConsumerFeed holds it under the core's lock and writes commits to the
// ledger; this file only decides what a request may do and describes it.
#include <sys/types.h>

#include <compare>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/engine_core.h"
#include "state/ledger.h"

namespace kaio::daemon {

// A rank's position: windows of `epoch` below rank-local `window` (and every
// earlier epoch) are done.
struct Token {
  int epoch = 0;
  int64_t window = 0;
  auto operator<=>(const Token&) const = default;
  std::string to_string() const { return "epoch " + std::to_string(epoch) + " window " + std::to_string(window); }
  nlohmann::json to_json() const { return {{"epoch", epoch}, {"window", window}}; }
};

struct RankState {
  Token committed, delivered;  // delivered: the highest token handed out (or attached from)
  int64_t windows_delivered = 0, windows_committed = 0;
  int64_t last_seen_unix = 0;
  std::map<int, pid_t> workers;  // attached worker slots
  Rate rate;                     // windows_delivered over time
};

struct ConsumerGroup {
  int world = 1;
  std::vector<RankState> ranks;
};

// Throws Error(usage) with the documented message for a bad name.
void check_consumer_name(const std::string& name);
// Request fields: an integer in [min, max] (`fallback` when absent or null)
// and a token object; Error(usage) naming the field otherwise.
int64_t int_arg(const nlohmann::json& args, const char* key, int64_t min, int64_t max, int64_t fallback);
Token token_arg(const nlohmann::json& value, const char* key);

class ConsumerTable {
 public:
  // From the ledger at start-up.
  void load(const std::vector<state::ConsumerRank>& rows);
  bool empty() const { return groups_.empty(); }
  // Throws Error(usage) for an unknown name or a rank out of range.
  RankState& rank(const std::string& name, int rank);
  ConsumerGroup* find(const std::string& name);
  ConsumerGroup& create(const std::string& name, int world, Token start, int64_t now_unix);
  const std::map<std::string, ConsumerGroup>& groups() const { return groups_; }

  // The oldest (epoch, global index) some rank has not committed, and the
  // group holding it back; nullopt-like {INT_MAX} when there is no consumer.
  struct Oldest {
    int epoch = 0;
    int64_t global = 0;
    std::string consumer;
    int rank = 0;
  };
  Oldest oldest_uncommitted() const;
  // True when every rank of every group committed at least `token`.
  bool all_committed(Token token) const;

  // The status section: one object per consumer with its ranks.
  nlohmann::json to_json(int64_t now_unix);

 private:
  std::map<std::string, ConsumerGroup> groups_;
};

}  // namespace kaio::daemon
