// kaio-hub: serves each folder root/<org>/<name> as a Hub dataset repo on
// loopback, with a CDN listener for LFS files and injectable faults.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "tools/kaio-hub/hub_server.h"

namespace {

const char* kUsage =
    "usage: kaio-hub --root DIR [--host 127.0.0.1] [--port N|0] [--cdn-host 127.0.0.2] [--cdn-port N]\n"
    "                [--port-file F] [--lfs-threshold BYTES] [--page-size N] [--token T] [--seed N]\n"
    "                [--faults JSON]   keys: drop_after drop_count rate_429 retry_after rate_5xx stall_after\n"
    "                                  stall_ms stall_count corrupt_first throttle_bps outage_ms\n"
    "                                  outage_after_bytes (an outage, until outage_ms 0, once this many\n"
    "                                  file bytes were sent)\n"
    "                                  hostile server: tree_malformed control_names (bools),\n"
    "                                  wrong_length wrong_length_delta endless_headers endless_body\n"
    "                                  (strings: requests whose path contains it; \"/\" for all)\n"
    "                                  signed CDN URLs: url_lifetime_ms (default 3600000), expire_urls (true\n"
    "                                  revokes every URL signed so far), cdn_expired_count (the next N CDN\n"
    "                                  requests get 403 \"Request has expired\"); unranged_limit (GETs without\n"
    "                                  Range of larger files get 400); send_timeout_ms (cut a body whose\n"
    "                                  reader takes nothing for this long)\n"
    "Faults change while running: POST /_kaio/faults with the same JSON. Counters: GET /_kaio/stats.\n";

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "kaio-hub: " << message << "\n" << kUsage;
  std::exit(2);
}

// Parses the options and serves until killed.
int run_hub(int argc, char** argv) {
  kaio::hub::HubOptions options;
  std::string port_file;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];
    };
    try {
      if (arg == "--root")
        options.root = value();
      else if (arg == "--host")
        options.host = value();
      else if (arg == "--port")
        options.port = std::stoi(value());
      else if (arg == "--cdn-host")
        options.cdn_host = value();
      else if (arg == "--cdn-port")
        options.cdn_port = std::stoi(value());
      else if (arg == "--port-file")
        port_file = value();
      else if (arg == "--lfs-threshold")
        options.lfs_threshold = std::stoull(value());
      else if (arg == "--page-size")
        options.page_size = std::stoi(value());
      else if (arg == "--token")
        options.token = value();
      else if (arg == "--seed")
        options.seed = std::stoull(value());
      else if (arg == "--faults")
        options.faults = nlohmann::json::parse(value());
      else if (arg == "--help" || arg == "-h") {
        std::cout << kUsage;
        return 0;
      } else
        usage_error("unknown option " + arg);
    } catch (const std::exception& e) {
      usage_error("bad value for " + arg + ": " + e.what());
    }
  }
  if (options.root.empty()) usage_error("--root is required");
  try {
    kaio::hub::HubServer server(options);
    std::string line = "kaio-hub: listening on http://" + options.host + ":" + std::to_string(server.port()) +
                       " (cdn http://" + options.cdn_host + ":" + std::to_string(server.cdn_port()) + ")\n";
    std::cout << line << std::flush;
    if (!port_file.empty()) {
      // Written whole then renamed, so a test never reads half a file.
      std::string tmp = port_file + ".tmp";
      std::ofstream(tmp) << server.port() << " " << server.cdn_port() << "\n";
      std::rename(tmp.c_str(), port_file.c_str());
    }
    server.serve_forever();
  } catch (const std::exception& e) {
    std::cerr << "kaio-hub: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_hub(argc, argv);
  } catch (const std::exception& e) {  // bad_alloc and the like: no stack trace, a line
    std::cerr << "kaio-hub: " << e.what() << "\n";
  }
  return 1;
}
