#include "daemon/window_trace.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "common/log.h"

namespace kaio::daemon {

WindowTrace::WindowTrace(const std::filesystem::path& file)
    : fd_(::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) {
  if (fd_.get() < 0) throw_errno("open window trace", file.string());
}

void WindowTrace::on_window(int epoch, int64_t step, const std::string& clip_id, int window) {
  pending_ += std::to_string(epoch) + " " + std::to_string(step) + " " + clip_id + " " + std::to_string(window) + "\n";
}

void WindowTrace::on_step(int64_t, double loss) {
  char text[32];
  std::snprintf(text, sizeof text, " %.9g\n", loss);
  std::string lines;
  lines.reserve(pending_.size() * 2);
  size_t start = 0;
  for (size_t nl = pending_.find('\n'); nl != std::string::npos; start = nl + 1, nl = pending_.find('\n', start)) {
    lines.append(pending_, start, nl - start);
    lines += text;
  }
  pending_.clear();
  // One write per step: a SIGKILL leaves whole steps in the file.
  const char* p = lines.data();
  size_t left = lines.size();
  while (left > 0) {
    ssize_t n = ::write(fd_.get(), p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      spdlog::warn("window trace: write failed: {}", std::strerror(errno));
      return;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace kaio::daemon
