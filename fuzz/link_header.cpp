// Response headers from the Hub or a mirror: the Link header's rel="next"
// (pagination), Retry-After and RateLimit (server-asked delays), and the
// header-line collector they are read through.
// Properties: nothing throws; a delay is never negative.
#include <cstdint>
#include <string>

#include "fetch/http.h"
#include "fetch/hub_parse.h"
#include "fuzz/fuzz_util.h"

using namespace kaio;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // The whole input as one Link header value.
  auto next = fetch::next_link(text);
  if (next) KAIO_FUZZ_CHECK(!next->empty(), "a next link is not empty");
  // The input as header lines, the way libcurl hands them to the callback.
  fetch::http::Headers headers;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    end = end == std::string::npos ? text.size() : end + 1;
    std::string line = text.substr(start, end - start);
    fetch::http::collect_header(line.data(), 1, line.size(), &headers);
    start = end;
  }
  (void)fetch::next_link(headers.get("link"));
  auto delay = fetch::http::server_delay(headers);
  if (delay) KAIO_FUZZ_CHECK(delay->count() >= 0, "a server delay is not negative");
  return 0;
}
