#pragma once
// The data socket (control.data_socket, docs/data-plane.md): consumers'
// connections, one worker each, served by LineServer with the control
// socket's framing and limits, except that an idle connection stays open
// (liveness is the connection). Each connection's requests run on its own
// thread and go to the ConsumerFeed; closing it detaches its worker.
#include <memory>

#include "common/config.h"
#include "daemon/consumer_feed.h"
#include "daemon/line_server.h"

namespace kaio::daemon {

class DataPlaneServer {
 public:
  DataPlaneServer(const Config& config, ConsumerFeed& feed);
  const std::filesystem::path& path() const { return server_.path(); }

 private:
  LineServer server_;
};

}  // namespace kaio::daemon
