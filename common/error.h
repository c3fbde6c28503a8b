#pragma once
// The error type every component throws. `kind` lets callers decide what to do
// (retry a transient fault, fail one item, stop the service) without parsing text.
#include <stdexcept>
#include <string>
#include <string_view>

namespace kaio {

enum class ErrorKind {
  config,     // bad configuration: the file and key are in the message
  usage,      // bad command-line use
  io,         // local filesystem trouble (EACCES, EIO, ...)
  disk_full,  // ENOSPC or EDQUOT: the work is retried once space returns
  transient,  // network or server fault worth retrying
  not_found,  // the Hub says the repo, revision or file does not exist
  auth,       // gated repo or bad token
  corrupt,    // bad input data: hash mismatch, broken archive or video
  rejected,   // hostile or over-limit input: traversal, bomb, size limit
  budget,     // the storage budget cannot hold the work
  cancelled,  // a stop was requested
  internal,   // a bug: should never happen
};

std::string_view to_string(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// errno as a message, with what we were doing and on which path.
[[noreturn]] void throw_errno(std::string_view what, std::string_view path);

}  // namespace kaio
