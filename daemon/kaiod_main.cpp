// kaiod: the service. A thin shell over the engine: parse arguments, load the
// config, set up logging, run.
#include <cstdio>
#include <cstring>
#include <string>

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "common/version.h"

namespace {

void usage(FILE* to) {
  std::fputs(
      "usage: kaiod --config FILE      run the service\n"
      "       kaiod --check-config FILE validate a config and exit\n"
      "       kaiod --version\n",
      to);
}

int check_config(const char* file) {
  kaio::Config c = kaio::load_config(file);
  std::printf("%s: ok\n  repo %s@%s, budget %s, cache %s, state %s\n  model %s on %s, windows %dx%dx%d at %g fps\n", file,
              c.source.repo.c_str(), c.source.revision.c_str(), kaio::format_size(c.storage.budget).c_str(),
              c.storage.cache_dir.c_str(), c.storage.state_dir.c_str(), c.train.model.c_str(), c.train.backend.c_str(),
              c.decode.frames, c.decode.size, c.decode.size, c.decode.fps);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
      std::printf("kaiod %s\n", KAIO_VERSION);
      return 0;
    }
    if (argc == 3 && std::strcmp(argv[1], "--check-config") == 0) return check_config(argv[2]);
    usage(stderr);
    return 2;
  } catch (const kaio::Error& e) {
    std::fprintf(stderr, "kaiod: %s\n", kaio::redact(e.what()).c_str());
    return 1;
  }
}
