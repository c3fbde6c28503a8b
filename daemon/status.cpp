#include "daemon/status.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "common/units.h"

namespace kaio::daemon {

using nlohmann::json;

namespace {

// [{"rank": R, "reason": "waiting-network"}, ...] in rank order.
json waiting_for_json(const std::map<int, std::string>& waiting) {
  json out = json::array();
  for (const auto& [rank, reason] : waiting) out.push_back({{"rank", rank}, {"reason", reason}});
  return out;
}

}  // namespace

json to_json(const ServiceStatus& s) {
  json out = {
      {"version", kStatusVersion},
      {"state", s.state},
      {"state_detail", s.state_detail},
      {"paused", s.paused},
      {"pause_reason", s.pause_reason},
      {"repo", s.repo},
      {"revision", s.revision},
      {"budget_bytes", s.budget_bytes},
      {"disk_bytes", s.disk_bytes},
      {"reserved_bytes", s.reserved_bytes},
      {"peak_reserved_bytes", s.peak_reserved_bytes},
      {"files",
       {{"total", s.files.total}, {"done", s.files.done}, {"failed", s.files.failed}, {"active", s.files.active}}},
      {"clips",
       {{"ready", s.clips.ready},
        {"consumed", s.clips.consumed},
        {"failed", s.clips.failed},
        {"deleted", s.clips.deleted}}},
      {"train",
       {{"epoch", s.train.epoch},
        {"step", s.train.step},
        {"samples", s.train.samples},
        {"loss", s.train.loss},
        {"backend", s.train.backend},
        {"wait_fraction", s.train.wait_fraction},
        {"checkpoint_step", s.train.checkpoint_step},
        {"loss_avg", s.train.loss_avg},
        {"loss_trend", s.train.loss_trend},
        {"step_seconds", s.train.step_seconds},
        {"tokens_per_second", s.train.tokens_per_second},
        {"mfu", s.train.mfu}}},
      {"job",
       {{"rank", s.job.rank},
        {"world", s.job.world},
        {"allreduce", s.job.allreduce},
        {"data_wait_seconds", s.job.data_wait_seconds},
        {"slowest_rank", s.job.slowest_rank},
        {"waiting_for", waiting_for_json(s.job.waiting_for)}}},
      {"rates",
       {{"download_bps", s.rates.download_bps},
        {"decode_clips_per_s", s.rates.decode_clips_per_s},
        {"train_samples_per_s", s.rates.train_samples_per_s}}},
      {"epoch_eta_seconds", s.epoch_eta_seconds},
      {"epoch_percent", s.epoch_percent},
      {"last_error", s.last_error},
      {"download_bytes_total", s.download_bytes_total},
      {"errors_total", s.errors_total},
  };
  if (!s.consumers.is_null()) out["consumers"] = s.consumers;
  return out;
}

void LossTrend::add(double loss) {
  ++steps_;
  // Exponential averages; until they have seen their span, plain means.
  auto blend = [&](double& avg, double span) {
    double weight = std::max(1.0 / static_cast<double>(steps_), 2.0 / (span + 1));
    avg += weight * (loss - avg);
  };
  blend(fast_, 10);
  blend(slow_, 50);
}

std::string LossTrend::direction() const {
  if (steps_ < 20) return "";
  if (fast_ < slow_ * 0.98) return "falling";
  if (fast_ > slow_ * 1.02) return "rising";
  return "flat";
}

std::string summary_line(const ServiceStatus& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s%s%s | disk %s / %s | step %lld loss %.4f | down %s/s", s.state.c_str(),
                s.state_detail.empty() ? "" : ": ", s.state_detail.c_str(), format_size(s.disk_bytes).c_str(),
                format_size(s.budget_bytes).c_str(), static_cast<long long>(s.train.step), s.train.loss,
                format_size(static_cast<uint64_t>(s.rates.download_bps)).c_str());
  return buf;
}

namespace {

std::string bar(double fraction, int width) {
  if (fraction < 0) fraction = 0;
  if (fraction > 1) fraction = 1;
  int filled = static_cast<int>(std::lround(fraction * width));
  return "[" + std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(width - filled), '.') +
         "]";
}

// "epoch     [####......] 42% done, eta 5m03s": each part only when known, no
// line when neither is. The percent rounds down: 100% is only ever done.
std::string epoch_line(const json& j) {
  double percent = j.value("epoch_percent", -1.0), eta = j.value("epoch_eta_seconds", -1.0);
  std::string line;
  if (percent >= 0) line = bar(percent / 100, 30) + fmt::format(" {:.0f}% done", std::floor(percent));
  if (eta >= 0) {
    line += line.empty() ? "" : ", ";
    line += "eta " + format_duration(std::chrono::milliseconds(static_cast<int64_t>(eta * 1000)));
  }
  return line.empty() ? "" : "epoch     " + line + "\n";
}

}  // namespace

std::string render_status(const json& j) {
  auto u64 = [&](const json& v) { return v.is_number() ? v.get<uint64_t>() : 0; };
  uint64_t budget = u64(j["budget_bytes"]), disk = u64(j["disk_bytes"]);
  const json& f = j["files"];
  const json& c = j["clips"];
  const json& t = j["train"];
  const json& r = j["rates"];
  std::string out;
  char line[512];
  std::string state = j.value("state", "?");
  std::string detail = j.value("state_detail", "");
  std::snprintf(line, sizeof line, "state     %s%s%s\n", state.c_str(), detail.empty() ? "" : " (",
                detail.empty() ? "" : (detail + ")").c_str());
  out += line;
  if (j.value("paused", false)) out += "paused    " + j.value("pause_reason", std::string("(no reason given)")) + "\n";
  std::snprintf(line, sizeof line, "disk      %s %s / %s (%.0f%%)\n",
                bar(budget ? double(disk) / double(budget) : 0, 30).c_str(), format_size(disk).c_str(),
                format_size(budget).c_str(), budget ? 100.0 * double(disk) / double(budget) : 0.0);
  out += line;
  std::snprintf(line, sizeof line, "files     %lld done / %lld total, %lld downloading, %lld failed\n",
                f.value("done", 0LL), f.value("total", 0LL), f.value("active", 0LL), f.value("failed", 0LL));
  out += line;
  std::snprintf(line, sizeof line, "clips     %lld ready, %lld consumed, %lld deleted, %lld failed\n",
                c.value("ready", 0LL), c.value("consumed", 0LL), c.value("deleted", 0LL), c.value("failed", 0LL));
  out += line;
  // Before the first step there is no loss and, while starting, no backend: "-", not 0.0000.
  bool stepped = t.value("step", 0LL) > 0;
  std::string loss = stepped ? fmt::format("{:.4f}", t.value("loss", 0.0)) : "-";
  std::string trend = t.value("loss_trend", std::string());
  if (stepped && t.contains("loss_avg"))
    loss += fmt::format(" (avg {:.4f}{}{})", t.value("loss_avg", 0.0), trend.empty() ? "" : ", ", trend);
  std::string backend = t.value("backend", std::string());
  std::snprintf(line, sizeof line, "train     epoch %lld step %lld samples %lld loss %s on %s, waiting for data %s\n",
                t.value("epoch", 0LL), t.value("step", 0LL), t.value("samples", 0LL), loss.c_str(),
                backend.empty() ? "-" : backend.c_str(),
                stepped ? fmt::format("{:.1f}%", 100.0 * t.value("wait_fraction", 0.0)).c_str() : "-");
  out += line;
  if (stepped && t.contains("step_seconds")) {
    const double mfu = t.value("mfu", -1.0);
    out += fmt::format("speed     {:.3f} s a step, {:.0f} tokens/s, MFU {}\n", t.value("step_seconds", 0.0),
                       t.value("tokens_per_second", 0.0), mfu >= 0 ? fmt::format("{:.1f}%", 100 * mfu) : "unknown");
  }
  if (auto job = j.value("job", json::object()); job.value("world", 1) > 1) {
    out += fmt::format("job       rank {} of {}, all-reduce over {}", job.value("rank", 0), job.value("world", 1),
                       job.value("allreduce", std::string("-")));
    const int slowest = job.value("slowest_rank", -1);
    const auto waits = job.value("data_wait_seconds", std::vector<double>());
    if (slowest >= 0 && slowest < static_cast<int>(waits.size()))
      out += fmt::format(", slowest rank {} ({:.1f} s waiting for its data)", slowest, waits[slowest]);
    for (const auto& w : job.value("waiting_for", json::array()))
      out += fmt::format(", waiting for rank {} ({})", w.value("rank", -1), w.value("reason", std::string()));
    out += "\n";
  }
  std::snprintf(line, sizeof line, "rates     download %s/s, decode %.2f clips/s, train %.1f samples/s\n",
                format_size(static_cast<uint64_t>(r.value("download_bps", 0.0))).c_str(),
                r.value("decode_clips_per_s", 0.0), r.value("train_samples_per_s", 0.0));
  out += line;
  out += epoch_line(j);
  std::string err = j.value("last_error", "");
  if (!err.empty()) out += "last error " + err + "\n";
  return out;
}

std::string render_consumers(const json& status) {
  auto it = status.find("consumers");
  if (it == status.end() || !it->is_array()) return "no consumers: kaiod trains with its own trainer\n";
  if (it->empty()) return "no consumer has attached yet\n";
  std::string out = "consumer         rank  state              delivered     committed     lag  win/s  dropped\n";
  char line[512];
  auto token = [](const json& t) {
    return "e" + std::to_string(t.value("epoch", 0)) + "/" + std::to_string(t.value("window", 0LL));
  };
  for (const auto& c : *it) {
    std::string name = c.value("name", std::string("?"));
    for (const auto& r : c.value("ranks", json::array())) {
      std::string state = r.value("state", std::string("?"));
      if (state == "attached")
        state += " x" + std::to_string(r.value("workers", 0));
      else
        state += " since " + std::to_string(r.value("last_seen", 0LL));
      std::string rank = std::to_string(r.value("rank", 0)) + "/" + std::to_string(c.value("world", 1));
      std::snprintf(line, sizeof line, "%-16s %-5s %-18s %-13s %-13s %4lld %6.1f  %lld\n", name.c_str(), rank.c_str(),
                    state.c_str(), token(r.value("delivered", json::object())).c_str(),
                    token(r.value("committed", json::object())).c_str(), r.value("lag_windows", 0LL),
                    r.value("windows_per_second", 0.0), c.value("dropped_windows", 0LL));
      out += line;
    }
  }
  return out;
}

}  // namespace kaio::daemon
