#pragma once
// An opt-in audit trail of what the trainer consumed: with KAIO_WINDOW_TRACE=FILE
// kaiod appends one line per window, "epoch step clip window loss", written
// once the step's loss is known (one write per step, O_APPEND, so a kill
// leaves whole steps only). Steps after the last durable checkpoint are
// trained again after a crash and so appear twice; the crash harness
// (tests/reliability) compares such traces with an uninterrupted run.
#include <cstdint>
#include <filesystem>
#include <string>

#include "common/fd.h"
#include "daemon/engine.h"

namespace kaio::daemon {

class WindowTrace : public WindowObserver {
 public:
  // Opens (creating) `file` for appending; throws kaio::Error when it cannot.
  explicit WindowTrace(const std::filesystem::path& file);
  WindowTrace(const WindowTrace&) = delete;
  WindowTrace& operator=(const WindowTrace&) = delete;

  void on_window(int epoch, int64_t step, const std::string& clip_id, int window) override;
  void on_step(int64_t step, double loss) override;

 private:
  Fd fd_;
  std::string pending_;  // "epoch step clip window" of the step in progress, one per line
};

}  // namespace kaio::daemon
