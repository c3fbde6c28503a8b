// ConsumerTable (consumer_table.h): the consumers' tokens and slots; held
// under the core's lock by the ConsumerFeed, no lock of its own.
#include "daemon/consumer_table.h"

#include <algorithm>
#include <climits>

#include "common/error.h"

namespace kaio::daemon {

void check_consumer_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '_' || c == '-';
  });
  if (!ok)
    throw Error(ErrorKind::usage, "consumer name \"" + name.substr(0, 80) + "\" must match [A-Za-z0-9._-]{1,64}");
}

int64_t int_arg(const nlohmann::json& args, const char* key, int64_t min, int64_t max, int64_t fallback) {
  auto it = args.find(key);
  if (it == args.end() || it->is_null()) {
    if (fallback < min) throw Error(ErrorKind::usage, std::string(key) + " is required");
    return fallback;
  }
  bool in_range = it->is_number_integer() && !(it->is_number_unsigned() && it->get<uint64_t>() > INT64_MAX) &&
                  it->get<int64_t>() >= min && it->get<int64_t>() <= max;
  if (!in_range)
    throw Error(ErrorKind::usage,
                std::string(key) + " must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
  return it->get<int64_t>();
}

Token token_arg(const nlohmann::json& value, const char* key) {
  if (!value.is_object()) throw Error(ErrorKind::usage, std::string(key) + " must be {\"epoch\": E, \"window\": J}");
  return {static_cast<int>(int_arg(value, "epoch", 0, 1 << 20, -1)), int_arg(value, "window", 0, INT64_MAX / 4096, -1)};
}

void ConsumerTable::load(const std::vector<state::ConsumerRank>& rows) {
  for (const auto& row : rows) {
    auto& group = groups_[row.consumer];
    group.world = row.world;
    group.ranks.resize(static_cast<size_t>(row.world));
    auto& r = group.ranks.at(static_cast<size_t>(row.rank));
    r.committed = r.delivered = {row.epoch, row.window};
    r.last_seen_unix = row.last_seen_unix;
  }
}

RankState& ConsumerTable::rank(const std::string& name, int rank) {
  auto* group = find(name);
  if (!group) throw Error(ErrorKind::usage, "unknown consumer \"" + name + "\"");
  if (rank < 0 || rank >= group->world)
    throw Error(ErrorKind::usage,
                "rank " + std::to_string(rank) + " is not below world " + std::to_string(group->world));
  return group->ranks[static_cast<size_t>(rank)];
}

ConsumerGroup* ConsumerTable::find(const std::string& name) {
  auto it = groups_.find(name);
  return it == groups_.end() ? nullptr : &it->second;
}

ConsumerGroup& ConsumerTable::create(const std::string& name, int world, Token start, int64_t now_unix) {
  auto& group = groups_[name];
  group.world = world;
  group.ranks.resize(static_cast<size_t>(world));
  for (auto& r : group.ranks) {
    r.committed = r.delivered = start;
    r.last_seen_unix = now_unix;
  }
  return group;
}

ConsumerTable::Oldest ConsumerTable::oldest_uncommitted() const {
  Oldest oldest{INT_MAX, 0, "", 0};
  for (const auto& [name, group] : groups_) {
    for (size_t r = 0; r < group.ranks.size(); ++r) {
      const auto& t = group.ranks[r].committed;
      // Rank r of world W owns the globals j*W + r: its first uncommitted one.
      Oldest here{t.epoch, t.window * group.world + static_cast<int64_t>(r), name, static_cast<int>(r)};
      if (std::tie(here.epoch, here.global) < std::tie(oldest.epoch, oldest.global)) oldest = here;
    }
  }
  return oldest;
}

bool ConsumerTable::all_committed(Token token) const {
  for (const auto& [name, group] : groups_)
    for (const auto& r : group.ranks)
      if (r.committed < token) return false;
  return true;
}

nlohmann::json ConsumerTable::to_json(int64_t now_unix) {
  auto out = nlohmann::json::array();
  for (auto& [name, group] : groups_) {
    auto ranks = nlohmann::json::array();
    for (size_t i = 0; i < group.ranks.size(); ++i) {
      auto& r = group.ranks[i];
      r.rate.sample(static_cast<double>(r.windows_delivered));
      bool attached = !r.workers.empty();
      int64_t lag = r.delivered.epoch == r.committed.epoch
                        ? std::max<int64_t>(0, r.delivered.window - r.committed.window)
                        : r.windows_delivered - r.windows_committed;
      ranks.push_back({{"rank", i},
                       {"state", attached ? "attached" : "gone"},
                       {"workers", r.workers.size()},
                       {"last_seen", attached ? now_unix : r.last_seen_unix},
                       {"delivered", r.delivered.to_json()},
                       {"committed", r.committed.to_json()},
                       {"windows_delivered", r.windows_delivered},
                       {"windows_committed", r.windows_committed},
                       {"lag_windows", std::max<int64_t>(0, lag)},
                       {"windows_per_second", r.rate.per_second()}});
    }
    out.push_back({{"name", name}, {"world", group.world}, {"ranks", ranks}});
  }
  return out;
}

}  // namespace kaio::daemon
