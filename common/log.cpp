#include "common/log.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/systemd_sink.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <shared_mutex>
#include <vector>

namespace kaio {
namespace {

std::shared_mutex secrets_mutex;
std::vector<std::string> secrets;

// Wraps the real sink and scrubs secrets from each message before it is written.
class RedactingSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit RedactingSink(spdlog::sink_ptr inner) : inner_(std::move(inner)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    // One event, one line: control bytes from names outside our control (archive
    // members, repo files, server messages) cannot split or forge a log line.
    std::string clean = printable(redact(std::string_view(msg.payload.data(), msg.payload.size())));
    spdlog::details::log_msg copy = msg;
    copy.payload = clean;
    inner_->log(copy);
  }
  void flush_() override { inner_->flush(); }

 private:
  spdlog::sink_ptr inner_;
};

}  // namespace

void add_secret(std::string secret) {
  if (secret.size() < 4) return;  // too short to scrub without mangling ordinary words
  std::unique_lock lock(secrets_mutex);
  secrets.push_back(std::move(secret));
}

std::string redact(std::string_view text) {
  std::string out(text);
  std::shared_lock lock(secrets_mutex);
  for (const auto& s : secrets) {
    for (size_t pos = out.find(s); pos != std::string::npos; pos = out.find(s, pos + 3))
      out.replace(pos, s.size(), "***");
  }
  return out;
}

void setup_logging(std::string_view level, std::string_view program) {
  spdlog::sink_ptr inner;
  if (std::getenv("JOURNAL_STREAM")) {
    inner = std::make_shared<spdlog::sinks::systemd_sink_mt>(std::string(program));
    inner->set_pattern("%v");
  } else {
    inner = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    inner->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
  }
  auto logger = std::make_shared<spdlog::logger>(std::string(program), std::make_shared<RedactingSink>(inner));
  logger->set_level(spdlog::level::from_str(std::string(level)));
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

std::string printable(std::string_view name) {
  std::string out;
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace kaio
