// The Hub API answers: /revision/ (commit sha) and /tree/ pages (file lists).
// Properties: only kaio::Error(corrupt) escapes; every listed file has a path.
#include <cstdint>
#include <string>

#include "common/error.h"
#include "fetch/hub_parse.h"
#include "fuzz/fuzz_util.h"

using namespace kaio;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::quiet();
  const std::string body(reinterpret_cast<const char*>(data), size);
  try {
    std::string sha = fetch::parse_revision(body, "revision main of dataset fuzz/repo");
    (void)sha;
  } catch (const Error& e) {
    KAIO_FUZZ_CHECK(e.kind() == ErrorKind::corrupt, "a bad revision answer is corrupt");
  }
  try {
    auto files = fetch::parse_tree_page(body, "file list of dataset fuzz/repo (page 1)",
                                        {"**/*.tar*", "*.mp4", "data/**"}, {"**/skip*"});
    for (const auto& f : files) KAIO_FUZZ_CHECK(!f.path.empty(), "listed files have a path");
  } catch (const Error& e) {
    KAIO_FUZZ_CHECK(e.kind() == ErrorKind::corrupt, "a bad tree page is corrupt");
  }
  return 0;
}
