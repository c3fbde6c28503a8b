// Prometheus /metrics: the exposition text read back by the Prometheus
// project's own Python parser (Debian's python3-prometheus-client), and the
// real kaiod serving it next to its control socket.
#include "daemon/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/version.h"
#include "tests/reliability/harness.h"

using namespace kaio::reliability;
using kaio::daemon::ServiceStatus;

namespace {

// One family as the parser sees it.
struct Family {
  std::string type, help;
  std::vector<json> samples;  // {"name", "labels", "value"}
};

// Debian's interpreter first: the package installs into its dist-packages,
// which a python3 earlier in PATH (pyenv, a venv) does not see.
std::string python() {
  static const std::string found = [] {
    for (const char* candidate : {"/usr/bin/python3", "python3"})
      if (std::system((std::string(candidate) + " -c 'import prometheus_client.parser' >/dev/null 2>&1").c_str()) == 0)
        return std::string(candidate);
    return std::string();
  }();
  return found;
}
bool have_parser() {
  return !python().empty();
}

// Parses exposition text with prometheus_client; a parse error fails the test.
std::map<std::string, Family> parse(const std::string& text, const fs::path& dir) {
  fs::path in = dir / "scrape.txt";
  std::ofstream(in, std::ios::binary) << text;
  const char* script =
      "import json, sys\n"
      "from prometheus_client.parser import text_string_to_metric_families\n"
      "out = {}\n"
      "for f in text_string_to_metric_families(open(sys.argv[1]).read()):\n"
      "    out[f.name] = {'type': f.type, 'help': f.documentation,\n"
      "                   'samples': [{'name': s.name, 'labels': s.labels, 'value': s.value} for s in f.samples]}\n"
      "print(json.dumps(out))\n";
  fs::path py = dir / "parse.py";
  std::ofstream(py) << script;
  auto r = run_command(python() + " " + shell_quote(py.string()) + " " + shell_quote(in.string()), 60);
  std::map<std::string, Family> families;
  if (r.exit_code != 0) {
    ADD_FAILURE() << "prometheus_client could not parse the scrape: " << r.output << "\n--- scrape:\n" << text;
    return families;
  }
  json j = json::parse(r.output, nullptr, false);
  if (j.is_discarded()) {
    ADD_FAILURE() << "parser output is not JSON: " << r.output;
    return families;
  }
  for (auto& [name, f] : j.items()) {
    Family fam;
    fam.type = f["type"];
    fam.help = f["help"];
    for (auto& s : f["samples"]) fam.samples.push_back(s);
    families[name] = fam;
  }
  return families;
}

// The value of the family's sample with these labels; NaN when there is none.
double value(const std::map<std::string, Family>& fams, const std::string& family,
             const std::map<std::string, std::string>& labels = {}) {
  auto it = fams.find(family);
  if (it == fams.end()) return std::nan("");
  for (const auto& s : it->second.samples) {
    bool match = true;
    for (const auto& [k, v] : labels) match = match && s["labels"].value(k, std::string("\x01")) == v;
    if (match) return s["value"].get<double>();
  }
  return std::nan("");
}

// What every scrape must hold, with its type. Counters are named by the parser
// without their _total suffix.
const std::map<std::string, std::string> kFamilies = {
    {"kaio_build_info", "gauge"},
    {"kaio_state", "gauge"},
    {"kaio_paused", "gauge"},
    {"kaio_budget_bytes", "gauge"},
    {"kaio_disk_bytes", "gauge"},
    {"kaio_reserved_bytes", "gauge"},
    {"kaio_reserved_peak_bytes", "gauge"},
    {"kaio_files_selected", "gauge"},
    {"kaio_files", "gauge"},
    {"kaio_clips", "gauge"},
    {"kaio_download_bytes", "counter"},
    {"kaio_download_bytes_per_second", "gauge"},
    {"kaio_decode_clips_per_second", "gauge"},
    {"kaio_train_samples_per_second", "gauge"},
    {"kaio_train_epoch", "gauge"},
    {"kaio_train_steps", "counter"},
    {"kaio_train_samples", "counter"},
    {"kaio_train_loss", "gauge"},
    {"kaio_data_wait_ratio", "gauge"},
    {"kaio_checkpoint_step", "gauge"},
    {"kaio_errors", "counter"},
};

void expect_families(const std::map<std::string, Family>& fams) {
  for (const auto& [name, type] : kFamilies) {
    auto it = fams.find(name);
    if (it == fams.end()) {
      ADD_FAILURE() << "no family " << name;
      continue;
    }
    EXPECT_EQ(it->second.type, type) << name;
    EXPECT_FALSE(it->second.help.empty()) << name;
    EXPECT_FALSE(it->second.samples.empty()) << name;
    if (type == "counter") {
      for (const auto& s : it->second.samples) EXPECT_EQ(s["name"], name + "_total") << name;
    }
  }
  // Exactly one state is current.
  double current = 0;
  for (const auto& s : fams.at("kaio_state").samples) current += s["value"].get<double>();
  EXPECT_EQ(current, 1.0);
}

// The fenced blocks of docs/metrics.md in `language` (json, promql, yaml).
std::vector<std::string> doc_blocks(const std::string& doc, const std::string& language) {
  std::vector<std::string> blocks;
  const std::string fence = "```" + language + "\n";
  for (size_t at = doc.find(fence); at != std::string::npos; at = doc.find(fence, at)) {
    at += fence.size();
    size_t end = doc.find("```", at);
    blocks.push_back(doc.substr(at, end - at));
    at = end;
  }
  return blocks;
}

// The Grafana dashboard docs/metrics.md ships (the json block with
// "__inputs"); null when there is none or it does not parse.
json grafana_dashboard(const std::string& doc) {
  for (const auto& block : doc_blocks(doc, "json"))
    if (block.find("\"__inputs\"") != std::string::npos) return json::parse(block, nullptr, false);
  return nullptr;
}

// Every PromQL expression docs/metrics.md offers: the Grafana panels'
// targets, the useful expressions and the alert rules.
std::vector<std::string> doc_queries(const std::string& doc) {
  std::vector<std::string> queries;
  json dashboard = grafana_dashboard(doc);
  if (dashboard.is_object()) {
    for (const auto& p : dashboard.value("panels", json::array()))
      for (const auto& t : p.value("targets", json::array())) queries.push_back(t.value("expr", ""));
  }
  for (const auto& block : doc_blocks(doc, "promql")) {
    std::istringstream lines(block);
    for (std::string line; std::getline(lines, line);) queries.push_back(line.substr(0, line.find('#')));
  }
  std::regex expr_re("expr: (.*)");
  for (const auto& block : doc_blocks(doc, "yaml"))
    for (auto it = std::sregex_iterator(block.begin(), block.end(), expr_re); it != std::sregex_iterator(); ++it)
      queries.push_back((*it)[1]);
  return queries;
}

// The metric names a PromQL expression reads.
std::set<std::string> metrics_in(const std::string& query) {
  std::set<std::string> names;
  std::regex name_re("kaio_[a-z_]*[a-z]");
  for (auto it = std::sregex_iterator(query.begin(), query.end(), name_re); it != std::sregex_iterator(); ++it)
    names.insert(it->str());
  return names;
}

}  // namespace

TEST(Metrics, ExpositionParsesWithThePrometheusParser) {
  if (!have_parser()) GTEST_SKIP() << "skipped: python3-prometheus-client is missing (scripts/setup.sh installs it)";
  Sandbox tmp("metrics", Sandbox::keep_on_failure);
  ServiceStatus s;
  s.state = "budget-wait";
  s.repo = "org/we\"ird\\name\nx";  // label values are escaped
  s.revision = "0123abcd";
  s.budget_bytes = 10'000'000'000;
  s.disk_bytes = 123'456'789;
  s.reserved_bytes = 200'000'000;
  s.peak_reserved_bytes = 9'999'999'999;
  s.files = {40, 7, 2, 3};
  s.clips = {5, 1, 4, 600};
  s.train.epoch = 1;
  s.train.step = 4242;
  s.train.samples = 33936;
  s.train.loss = 0.3125;
  s.train.backend = "cpu";
  s.train.wait_fraction = 0.25;
  s.train.checkpoint_step = 4200;
  s.rates.download_bps = 1.5e6;
  s.download_bytes_total = 987'654'321'012ULL;
  s.errors_total = {{"transient", 12}, {"corrupt", 3}};
  auto fams = parse(kaio::daemon::render_metrics(s, "9.8.7"), tmp);
  expect_families(fams);
  EXPECT_EQ(value(fams, "kaio_budget_bytes"), 1e10);
  EXPECT_EQ(value(fams, "kaio_disk_bytes"), 123456789.0);
  EXPECT_EQ(value(fams, "kaio_reserved_peak_bytes"), 9999999999.0);
  EXPECT_EQ(value(fams, "kaio_state", {{"state", "budget-wait"}}), 1.0);
  EXPECT_EQ(value(fams, "kaio_state", {{"state", "running"}}), 0.0);
  EXPECT_EQ(value(fams, "kaio_files_selected"), 40.0);
  EXPECT_EQ(value(fams, "kaio_files", {{"state", "failed"}}), 2.0);
  EXPECT_EQ(value(fams, "kaio_files", {{"state", "active"}}), 3.0);
  EXPECT_EQ(value(fams, "kaio_clips", {{"state", "ready"}}), 5.0);
  EXPECT_EQ(value(fams, "kaio_clips", {{"state", "deleted"}}), 600.0);
  EXPECT_EQ(value(fams, "kaio_clips", {{"state", "failed"}}), 4.0);
  EXPECT_EQ(value(fams, "kaio_download_bytes"), 987654321012.0);
  EXPECT_EQ(value(fams, "kaio_download_bytes_per_second"), 1.5e6);
  EXPECT_EQ(value(fams, "kaio_train_steps"), 4242.0);
  EXPECT_EQ(value(fams, "kaio_train_samples"), 33936.0);
  EXPECT_EQ(value(fams, "kaio_train_loss"), 0.3125);
  EXPECT_EQ(value(fams, "kaio_data_wait_ratio"), 0.25);
  EXPECT_EQ(value(fams, "kaio_checkpoint_step"), 4200.0);
  EXPECT_EQ(value(fams, "kaio_errors", {{"kind", "transient"}}), 12.0);
  EXPECT_EQ(value(fams, "kaio_errors", {{"kind", "corrupt"}}), 3.0);
  EXPECT_EQ(value(fams, "kaio_errors", {{"kind", "disk_full"}}), 0.0);  // every kind has a series from the start
  EXPECT_EQ(value(fams, "kaio_build_info",
                  {{"version", "9.8.7"}, {"repo", s.repo}, {"revision", "0123abcd"}, {"backend", "cpu"}}),
            1.0);
  EXPECT_EQ(fams.count("kaio_epoch_eta_seconds"), 0u);  // unknown (-1): no sample rather than a fake one
  EXPECT_EQ(fams.count("kaio_epoch_percent"), 0u);
  s.epoch_eta_seconds = 90;
  s.epoch_percent = 37.5;
  fams = parse(kaio::daemon::render_metrics(s, "9.8.7"), tmp);
  EXPECT_EQ(value(fams, "kaio_epoch_eta_seconds"), 90.0);
  EXPECT_EQ(value(fams, "kaio_epoch_percent"), 37.5);
  EXPECT_EQ(fams["kaio_epoch_percent"].type, "gauge");
}

// The real kaiod with metrics.listen on an ephemeral loopback port: a scrape
// with curl parses, names the configured budget, and a client holding half a
// request open does not keep kaiod from stopping on SIGTERM.
TEST(Metrics, KaiodServesMetricsAndStopsOnSigterm) {
  if (!have_parser()) GTEST_SKIP() << "skipped: python3-prometheus-client is missing (scripts/setup.sh installs it)";
  HubRun run("metrics", {}, small_spec());
  ASSERT_TRUE(run.hub->ok()) << read_text(run.dir / "hub.log");
  run.s.budget = "16MB";
  run.s.train = {{"epochs", 1000}};  // still running when scraped and stopped
  run.s.write_config();
  json c = json::parse(read_text(run.s.config_file()));
  c["metrics"] = {{"listen", "127.0.0.1:0"}};
  std::ofstream(run.s.config_file()) << c.dump(2);

  Child kaiod;
  start_kaiod(kaiod, run.s, false);
  std::smatch m;
  std::regex said("metrics at http://127\\.0\\.0\\.1:([0-9]+)/metrics");
  std::string log;
  ASSERT_TRUE(wait_until(
      [&] {
        log = read_text(run.s.log());
        return std::regex_search(log, m, said) || !kaiod.running();
      },
      120s));
  ASSERT_TRUE(std::regex_search(log, m, said)) << tail(log);
  int port = std::stoi(m[1]);
  // The control socket answers during start-up, before the files are listed
  // and the trainer made: scrape once start-up is over.
  ASSERT_TRUE(wait_until(
      [&] {
        auto st = status(run.s);
        return !kaiod.running() ||
               (st && st->value("state", std::string()) != "starting" && (*st)["train"].value("backend", "") == "cpu");
      },
      120s))
      << tail(read_text(run.s.log()));

  std::string url = "http://127.0.0.1:" + std::to_string(port) + "/metrics";
  auto headers = run_command("curl -s -f -m 20 -o /dev/null -w '%{content_type}' " + shell_quote(url), 30);
  ASSERT_EQ(headers.exit_code, 0) << headers.output;
  EXPECT_EQ(headers.output, "text/plain; version=0.0.4; charset=utf-8");
  auto scrape = run_command("curl -s -f -m 20 " + shell_quote(url), 30);
  ASSERT_EQ(scrape.exit_code, 0) << scrape.output;
  auto fams = parse(scrape.output, run.dir);
  expect_families(fams);
  EXPECT_EQ(value(fams, "kaio_budget_bytes"), 16e6);
  EXPECT_EQ(
      value(fams, "kaio_build_info", {{"version", KAIO_VERSION}, {"repo", "kaio-test/llava"}, {"backend", "cpu"}}), 1.0)
      << scrape.output;
  EXPECT_EQ(value(fams, "kaio_files_selected"), 2.0);
  EXPECT_EQ(value(fams, "kaio_paused"), 0.0);
  // Every query docs/metrics.md offers (the Grafana panel, the useful
  // expressions, the alerts) reads metrics this scrape has.
  std::set<std::string> scraped;
  for (const auto& [name, fam] : fams)
    for (const auto& sample : fam.samples) scraped.insert(sample["name"].get<std::string>());
  auto queries = doc_queries(read_text(fs::path(KAIO_SOURCE_DIR) / "docs/metrics.md"));
  EXPECT_GE(queries.size(), 12u) << "4 panels of 1 to 3 targets, 6 expressions, 3 alerts";
  size_t checked = 0;
  for (const auto& q : queries) {
    for (const auto& name : metrics_in(q)) {
      EXPECT_TRUE(scraped.count(name)) << "docs/metrics.md queries " << name << " (in `" << q
                                       << "`), which kaiod's /metrics does not serve";
      ++checked;
    }
  }
  EXPECT_GE(checked, 12u);
  // A path other than /metrics is not found, and kaiod keeps serving.
  auto other = run_command(
      "curl -s -m 20 -o /dev/null -w '%{http_code}' http://127.0.0.1:" + std::to_string(port) + "/nothing", 30);
  EXPECT_EQ(other.output, "404");

  // Half a request, then silence.
  int stalled = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(stalled, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(stalled, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const char half[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
  ASSERT_EQ(::send(stalled, half, sizeof half - 1, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof half - 1));

  kaiod.signal(SIGTERM);
  auto exited = kaiod.wait_for(150s);
  ::close(stalled);
  ASSERT_TRUE(exited.has_value()) << "kaiod did not stop on SIGTERM: " << tail(read_text(run.s.log()));
  EXPECT_EQ(kaiod.exit_code(), 0) << tail(read_text(run.s.log()));
  EXPECT_NE(read_text(run.s.log()).find("kaiod stopped"), std::string::npos) << tail(read_text(run.s.log()));
  // Nothing listens any more.
  auto after = run_command("curl -s -m 5 -o /dev/null " + shell_quote(url), 15);
  EXPECT_NE(after.exit_code, 0);
}

// A port that is taken stops kaiod at start-up with the address named.
TEST(Metrics, KaiodNamesAMetricsAddressItCannotListenOn) {
  HubRun run("metrics-busy", {}, small_spec());
  ASSERT_TRUE(run.hub->ok());
  int taken = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(taken, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(taken, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(taken, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(taken, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  int port = ntohs(addr.sin_port);
  run.s.write_config();
  json c = json::parse(read_text(run.s.config_file()));
  c["metrics"] = {{"listen", "127.0.0.1:" + std::to_string(port)}};
  std::ofstream(run.s.config_file()) << c.dump(2);
  Child kaiod;
  start_kaiod(kaiod, run.s, false);
  auto exited = kaiod.wait_for(120s);
  ::close(taken);
  ASSERT_TRUE(exited.has_value()) << tail(read_text(run.s.log()));
  EXPECT_EQ(kaiod.exit_code(), 1);
  std::string log = read_text(run.s.log());
  EXPECT_NE(log.find("metrics.listen 127.0.0.1:" + std::to_string(port) + ": cannot listen there"), std::string::npos)
      << tail(log);
}

// docs/metrics.md names only metrics kaiod serves, every one of them, and its
// Grafana JSON imports (it parses, and its queries name served metrics).
TEST(Metrics, DocsNameWhatKaiodServes) {
  ServiceStatus s;
  s.epoch_eta_seconds = 60;  // so that the optional ones are there too
  s.epoch_percent = 40;
  s.train.mfu = 0.4;
  std::string text = kaio::daemon::render_metrics(s, KAIO_VERSION);
  std::set<std::string> served;
  std::regex sample_re("(^|\\n)(kaio_[a-z_]+)[{ ]");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), sample_re); it != std::sregex_iterator(); ++it)
    served.insert((*it)[2]);
  ASSERT_GT(served.size(), 15u) << text;

  std::string doc = read_text(fs::path(KAIO_SOURCE_DIR) / "docs/metrics.md");
  std::set<std::string> named;
  std::regex name_re("kaio_[a-z_]*[a-z]");
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), name_re); it != std::sregex_iterator(); ++it)
    named.insert(it->str());
  for (const auto& n : named) {
    EXPECT_TRUE(served.count(n)) << "docs/metrics.md names " << n << ", which kaiod does not serve";
  }
  for (const auto& n : served) {
    EXPECT_TRUE(named.count(n)) << n << " is served but not in docs/metrics.md";
  }

  json dashboard = grafana_dashboard(doc);
  ASSERT_TRUE(dashboard.is_object()) << "docs/metrics.md has no Grafana dashboard that parses";
  ASSERT_TRUE(dashboard["panels"].is_array());
  for (const auto& p : dashboard["panels"]) {
    for (const auto& t : p["targets"]) EXPECT_NE(t["expr"].get<std::string>().find("kaio_"), std::string::npos) << t;
  }
}
