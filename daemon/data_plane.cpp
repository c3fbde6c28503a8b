// DataPlaneServer (data_plane.h): one DataSession per connection, on the
// connection's thread; the requests' work is the ConsumerFeed's.
#include "daemon/data_plane.h"

#include <atomic>

#include "common/error.h"
#include "daemon/control.h"

namespace kaio::daemon {
namespace {

using nlohmann::json;

std::atomic<uint64_t> g_connections{0};

class DataSession : public LineSession {
 public:
  DataSession(ConsumerFeed& feed, const Peer& peer) : feed_(feed), peer_(peer) { worker_.connection = ++g_connections; }
  ~DataSession() override { feed_.close(worker_); }
  DataSession(const DataSession&) = delete;
  DataSession& operator=(const DataSession&) = delete;

  LineReply on_line(const std::string& line) override {
    sent_.clear();  // the last reply's descriptors went out with it
    bool detach = false, answered = false;
    auto handler = [&](const std::string& cmd, const json& args, const Peer&) {
      json result = dispatch(cmd, args, detach);
      answered = true;
      return result;
    };
    LineReply reply{reply_to_request(line, peer_, handler), {}, detach};
    if (!answered) sent_.clear();  // an error reply hands out nothing
    for (const auto& fd : sent_) reply.fds.push_back(fd.get());
    return reply;
  }

 private:
  json dispatch(const std::string& cmd, const json& args, bool& detach) {
    if (cmd == "attach") return feed_.attach(worker_, args, peer_.pid);
    if (cmd == "next") return feed_.next(worker_, args, sent_);
    if (cmd == "commit") return feed_.commit(args);
    if (cmd == "detach") {
      detach = true;
      feed_.close(worker_);
      return json::object();
    }
    throw Error(ErrorKind::usage,
                "unknown command \"" + cmd + "\" (the data socket serves attach, next, commit, detach)");
  }

  ConsumerFeed& feed_;
  Peer peer_;
  WorkerCursor worker_;
  std::vector<Fd> sent_;
};

LineServerOptions data_options() {
  LineServerOptions options;
  options.what = "data";
  options.line_timeout = std::chrono::seconds(5);
  options.idle_timeout = std::chrono::milliseconds(0);  // a worker may train for minutes between requests
  options.max_clients = 256;
  return options;
}

}  // namespace

DataPlaneServer::DataPlaneServer(const Config& config, ConsumerFeed& feed)
    : server_(
          config.control.data_socket, config.control.admin_group,
          [&feed](const Peer& peer) { return std::make_unique<DataSession>(feed, peer); }, data_options()) {}

}  // namespace kaio::daemon
