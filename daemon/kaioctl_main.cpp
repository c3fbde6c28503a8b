// kaioctl: the remote. A thin client of kaiod's control socket.
#include <cstdio>
#include <cstring>

#include "common/version.h"

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("kaioctl %s\n", KAIO_VERSION);
    return 0;
  }
  std::fputs("usage: kaioctl [--socket PATH] status|pause|resume|ls|fetch|probe ...\n       kaioctl --version\n", stderr);
  return 2;
}
