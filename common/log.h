#pragma once
// Logging for operators: one line per event that matters. To journald when
// started by systemd (JOURNAL_STREAM is set), otherwise to stderr. Secrets
// registered with add_secret() are replaced by "***" in every line.
#include <spdlog/spdlog.h>

#include <string>
#include <string_view>

namespace kaio {

void setup_logging(std::string_view level, std::string_view program);

// Registers a secret (the Hub token) that must never appear in any output.
void add_secret(std::string secret);
// Replaces every registered secret in `text` by "***".
std::string redact(std::string_view text);
// A name from outside (archive member, repo file) fit for a log line or an
// error: control bytes as \xNN, so it cannot move the cursor, recolour a
// terminal or forge a log line.
std::string printable(std::string_view name);

}  // namespace kaio
