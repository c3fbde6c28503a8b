#include "common/error.h"

#include <cerrno>
#include <cstring>

namespace kaio {

std::string_view to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::config:
      return "config";
    case ErrorKind::usage:
      return "usage";
    case ErrorKind::io:
      return "io";
    case ErrorKind::disk_full:
      return "disk_full";
    case ErrorKind::transient:
      return "transient";
    case ErrorKind::not_found:
      return "not_found";
    case ErrorKind::auth:
      return "auth";
    case ErrorKind::corrupt:
      return "corrupt";
    case ErrorKind::rejected:
      return "rejected";
    case ErrorKind::budget:
      return "budget";
    case ErrorKind::cancelled:
      return "cancelled";
    case ErrorKind::internal:
      return "internal";
  }
  return "unknown";
}

void throw_errno(std::string_view what, std::string_view path) {
  int e = errno;
  throw Error(e == ENOSPC || e == EDQUOT ? ErrorKind::disk_full : ErrorKind::io,
              std::string(what) + " " + std::string(path) + ": " + std::strerror(e));
}

}  // namespace kaio
