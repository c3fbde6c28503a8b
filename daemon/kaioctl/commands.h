#pragma once
// kaioctl's commands, one entry point each; main.cpp dispatches on the name.
// Each returns the exit code: 0 ok, 1 kaiod refused or the work failed, 2
// usage, 3 no kaiod answered.
#include <string>
#include <vector>

namespace kaio::ctl {

struct Invocation {
  std::string socket;             // --socket, else $KAIO_SOCKET, else the default
  std::vector<std::string> args;  // what follows the command's name
};

// Talk to kaiod over the control socket (control_commands.cpp).
int status_command(const Invocation& in);
int ls_command(const Invocation& in);
int pause_command(const Invocation& in);
int resume_command(const Invocation& in);
int consumers_command(const Invocation& in);  // the status' consumers section as a table
// Stand-alone: no kaiod needed.
int fetch_command(const Invocation& in);  // fetch.cpp
int probe_command(const Invocation& in);  // probe.cpp
// Reads the ledger read-only: no kaiod needed, nor in the way.
int report_command(const Invocation& in);  // report.cpp

}  // namespace kaio::ctl
