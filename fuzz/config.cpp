// kaiod's config loader. Properties: only Error(config) escapes, and its
// message names the file; a config that loads has a repo.
#include "common/config.h"

#include <cstdint>
#include <string>

#include "common/error.h"
#include "fuzz/fuzz_util.h"

using namespace kaio;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    Config c = parse_config(text, "fuzz.json");
    KAIO_FUZZ_CHECK(!c.source.repo.empty(), "a loaded config has a repo");
    KAIO_FUZZ_CHECK(c.fetch.stall_timeout.count() >= 0 && c.fetch.connect_timeout.count() >= 0 &&
                        c.fetch.max_backoff.count() >= 0 && c.decode.timeout.count() >= 0,
                    "durations are not negative");
  } catch (const Error& e) {
    KAIO_FUZZ_CHECK(e.kind() == ErrorKind::config, "a bad config is a config error");
    KAIO_FUZZ_CHECK(std::string(e.what()).starts_with("fuzz.json: "), "the message names the file");
  }
  return 0;
}
