// A process around run_probe_command, as kaioctl will call it.
#include "decode/probe_command.h"

int main(int argc, char** argv) {
  return kaio::decode::run_probe_command(argc, argv);
}
