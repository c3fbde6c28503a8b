// The control socket over a real Unix socket: replies, errors, peer checks,
// and hostile clients (oversized, malformed, slow) that must not stall it.
#include "daemon/control.h"

#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "common/error.h"
#include "tests/support/sandbox.h"

using namespace kaio::daemon;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct ControlSocket : testing::Test {
  kaio::test::Sandbox dir{"ctl"};
  fs::path sock = dir / "kaiod.sock";
  std::atomic<int> pauses{0};
  ControlHandler handler = [this](const std::string& cmd, const json& args, const Peer& peer) -> json {
    if (cmd == "status") return {{"state", "running"}, {"uid", peer.uid}};
    if (cmd == "pause") {
      if (!peer.admin) throw kaio::Error(kaio::ErrorKind::usage, "pause needs root, the kaio user or the admin group");
      ++pauses;
      return {{"message", args.value("reason", "")}};
    }
    throw kaio::Error(kaio::ErrorKind::usage, "unknown command \"" + cmd + "\"");
  };
};

int raw_connect(const fs::path& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

}  // namespace

TEST_F(ControlSocket, AnswersRequestsAndNamesErrors) {
  ControlServer server(sock, "", handler);
  struct stat st {};
  ASSERT_EQ(::stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  ControlClient client(sock, std::chrono::seconds(5));
  json reply = client.call("status");
  EXPECT_TRUE(reply["ok"].get<bool>());
  EXPECT_EQ(reply["result"]["state"], "running");
  EXPECT_EQ(reply["v"], 1);
  json bad = client.call("frobnicate");  // same connection keeps working after an error
  EXPECT_FALSE(bad["ok"].get<bool>());
  EXPECT_NE(bad["error"].get<std::string>().find("frobnicate"), std::string::npos);
  EXPECT_TRUE(client.call("pause", {{"reason", "maintenance"}})["ok"].get<bool>());
  EXPECT_EQ(pauses.load(), 1);
}

TEST_F(ControlSocket, MalformedAndWrongVersionGetErrorReplies) {
  ControlServer server(sock, "", handler);
  ControlClient client(sock, std::chrono::seconds(5));
  json r1 = json::parse(client.call_raw("this is not json\n"));
  EXPECT_FALSE(r1["ok"].get<bool>());
  EXPECT_NE(r1["error"].get<std::string>().find("malformed"), std::string::npos);
  json r2 = json::parse(client.call_raw(R"({"v": 99, "cmd": "status"})"
                                        "\n"));
  EXPECT_NE(r2["error"].get<std::string>().find("version 99"), std::string::npos);
  json r3 = json::parse(client.call_raw("[1,2,3]\n"));
  EXPECT_FALSE(r3["ok"].get<bool>());
  EXPECT_TRUE(client.call("status")["ok"].get<bool>());
}

TEST_F(ControlSocket, OversizedRequestIsRefusedAndServerKeepsServing) {
  ControlServer server(sock, "", handler);
  ControlClient client(sock, std::chrono::seconds(5));
  std::string huge(200 * 1024, 'x');
  json r = json::parse(client.call_raw(huge));
  EXPECT_NE(r["error"].get<std::string>().find("longer than"), std::string::npos);
  ControlClient again(sock, std::chrono::seconds(5));
  EXPECT_TRUE(again.call("status")["ok"].get<bool>());
}

TEST_F(ControlSocket, SlowClientsDoNotStallOthers) {
  ControlServer server(sock, "", handler, std::chrono::milliseconds(500));
  // Ten clients that send half a request and stall.
  std::vector<int> slow;
  for (int i = 0; i < 10; ++i) {
    int fd = raw_connect(sock);
    ASSERT_EQ(::send(fd, "{\"cmd\":", 7, 0), 7);
    slow.push_back(fd);
  }
  ControlClient client(sock, std::chrono::seconds(2));
  EXPECT_TRUE(client.call("status")["ok"].get<bool>());
  // A stalled client gets a timeout reply once its deadline passes.
  char buf[512] = {};
  ssize_t n = ::recv(slow[0], buf, sizeof buf - 1, 0);
  ASSERT_GT(n, 0);
  EXPECT_NE(std::string(buf).find("not completed in time"), std::string::npos) << buf;
  for (int fd : slow) ::close(fd);
}

TEST_F(ControlSocket, NonAdminPeerIsRefusedPause) {
  if (::geteuid() != 0) GTEST_SKIP() << "skipped: needs root to act as another user";
  ControlServer server(sock, "", handler);
  ::chmod(dir.path().c_str(), 0755);
  ::chmod(sock.c_str(), 0666);
  pid_t child = ::fork();
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    try {
      ControlClient client(sock, std::chrono::seconds(5));
      json status = client.call("status");
      json pause = client.call("pause");
      bool ok = status["ok"].get<bool>() && !pause["ok"].get<bool>() &&
                pause["error"].get<std::string>().find("needs root") != std::string::npos;
      ::_exit(ok ? 0 : 11);
    } catch (...) {
      ::_exit(12);
    }
  }
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
  EXPECT_EQ(pauses.load(), 0);
}

TEST_F(ControlSocket, StaleSocketIsReplacedButALiveOneIsNot) {
  {
    ControlServer first(sock, "", handler);
    EXPECT_THROW(ControlServer second(sock, "", handler), kaio::Error);
  }
  // Leave a dead socket file behind, as a crash would.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
  ASSERT_TRUE(fs::exists(sock));
  ControlServer server(sock, "", handler);
  ControlClient client(sock, std::chrono::seconds(5));
  EXPECT_TRUE(client.call("status")["ok"].get<bool>());
}

TEST_F(ControlSocket, ClientNamesTheSocketWhenNoDaemon) {
  try {
    ControlClient client(dir / "nobody.sock", std::chrono::seconds(1));
    FAIL();
  } catch (const kaio::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nobody.sock"), std::string::npos);
  }
}

TEST_F(ControlSocket, KaioctlExitCodes) {
  std::string kaioctl = std::string(KAIO_BUILD_DIR) + "/daemon/kaioctl";
  EXPECT_EQ(
      WEXITSTATUS(std::system((kaioctl + " --socket " + (dir / "none.sock").string() + " status 2>/dev/null").c_str())),
      3);
  EXPECT_EQ(WEXITSTATUS(std::system((kaioctl + " bogus 2>/dev/null").c_str())), 2);
  ControlServer server(sock, "", handler);
  EXPECT_EQ(WEXITSTATUS(std::system((kaioctl + " --socket " + sock.string() + " ls 2>/dev/null").c_str())), 1);
  EXPECT_EQ(WEXITSTATUS(std::system((kaioctl + " --socket " + sock.string() + " pause --reason x >/dev/null").c_str())),
            0);
}
