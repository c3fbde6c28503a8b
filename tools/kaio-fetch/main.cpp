// kaio-fetch: the `kaioctl fetch` command as its own program, so tests and
// benchmarks can drive the Hub client as a real process.
#include "fetch/fetch_command.h"

int main(int argc, char** argv) {
  return kaio::fetch::run_fetch_command(argc, argv);
}
