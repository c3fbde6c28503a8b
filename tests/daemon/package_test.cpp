// The .deb `make package` builds: cpack run against this build tree (its
// CPackConfig.cmake, so nothing is rebuilt), then the package read back with
// dpkg-deb: what it installs, where the unit and the maintainer scripts expect
// it, and a config that kaiod accepts.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "common/version.h"
#include "tests/support/process.h"
#include "tests/support/sandbox.h"

using kaio::test::run_command;
using kaio::test::shell_quote;
namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// "Key=value" lines of a unit's [Service] and [Unit] sections, last one wins.
std::string unit_value(const std::string& unit, const std::string& key) {
  std::smatch m;
  std::string found;
  std::regex line("(^|\\n)" + key + "=([^\\n]*)");
  for (auto it = std::sregex_iterator(unit.begin(), unit.end(), line); it != std::sregex_iterator(); ++it)
    found = (*it)[2];
  return found;
}

struct Package : testing::Test {
  kaio::test::Sandbox dir{"pkg", kaio::test::Sandbox::keep_on_failure};
};

}  // namespace

TEST_F(Package, DebInstallsWhatTheUnitAndScriptsName) {
  if (run_command("sh -c 'command -v cpack && command -v dpkg-deb'", 10).exit_code != 0)
    GTEST_SKIP() << "skipped: no cpack or dpkg-deb";
  fs::path config = fs::path(KAIO_BUILD_DIR) / "CPackConfig.cmake";
  ASSERT_TRUE(fs::exists(config)) << config;
  fs::remove_all(dir);
  fs::create_directories(dir);

  auto packed = run_command(
      "cpack -G DEB --config " + shell_quote(config.string()) + " -B " + shell_quote((dir / "out").string()), 240);
  ASSERT_EQ(packed.exit_code, 0) << packed.output;
  fs::path deb = dir / "out" / ("kaio_" + std::string(KAIO_VERSION) + "_" + [] {
                   auto r = run_command("dpkg --print-architecture", 10);
                   return r.output.substr(0, r.output.find('\n'));
                 }() + ".deb");
  ASSERT_TRUE(fs::exists(deb)) << packed.output;

  // Contents: every path the package installs, as /abs/path (folders without the trailing slash).
  auto listing = run_command("dpkg-deb -c " + shell_quote(deb.string()), 60);
  ASSERT_EQ(listing.exit_code, 0) << listing.output;
  std::set<std::string> contents;
  std::istringstream lines(listing.output);
  for (std::string line; std::getline(lines, line);) {
    auto at = line.find(" ./");
    if (at == std::string::npos) continue;
    std::string path = line.substr(at + 2);
    if (auto arrow = path.find(" -> "); arrow != std::string::npos) path.resize(arrow);
    if (path.size() > 1 && path.back() == '/') path.pop_back();
    contents.insert(path);
  }
  for (const char* want :
       {"/usr/bin/kaiod", "/usr/bin/kaioctl", "/usr/bin/kaio-mkdata", "/usr/lib/systemd/system/kaiod.service",
        "/usr/lib/systemd/system/kaiod@.service", "/usr/lib/sysusers.d/kaio.conf", "/usr/lib/tmpfiles.d/kaio.conf",
        "/etc/kaio/kaiod.json", "/usr/share/kaio/configs/llava-video-178k.json",
        "/usr/share/kaio/configs/physicalai-av.json", "/usr/share/doc/kaio/README.md"})
    EXPECT_TRUE(contents.count(want)) << want << " is not in the package:\n" << listing.output;
  for (const auto& p : contents) {
    EXPECT_EQ(p.find("/usr/local"), std::string::npos) << p;
    EXPECT_EQ(p.find(KAIO_BUILD_DIR), std::string::npos) << p;
  }

  auto info = run_command("dpkg-deb -I " + shell_quote(deb.string()), 60);
  ASSERT_EQ(info.exit_code, 0) << info.output;
  EXPECT_NE(info.output.find("Package: kaio\n"), std::string::npos) << info.output;
  EXPECT_NE(info.output.find("Version: " + std::string(KAIO_VERSION) + "\n"), std::string::npos) << info.output;
  EXPECT_TRUE(std::regex_search(info.output, std::regex("Depends:.*\\bsystemd\\b"))) << info.output;

  // Maintainer scripts: present, executable, valid sh, and every file they name is in the package.
  fs::path control = dir / "control";
  ASSERT_EQ(run_command("dpkg-deb -e " + shell_quote(deb.string()) + " " + shell_quote(control.string()), 60).exit_code,
            0);
  for (const char* script : {"postinst", "prerm", "postrm"}) {
    fs::path p = control / script;
    ASSERT_TRUE(fs::exists(p)) << script;
    EXPECT_NE(fs::status(p).permissions() & fs::perms::owner_exec, fs::perms::none) << script;
    auto syntax = run_command("sh -n " + shell_quote(p.string()), 10);
    EXPECT_EQ(syntax.exit_code, 0) << script << ": " << syntax.output;
    std::string text = read_text(p);
    std::regex path_re("(/usr|/etc)/[A-Za-z0-9._/-]*[A-Za-z0-9]");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), path_re); it != std::sregex_iterator(); ++it)
      EXPECT_TRUE(contents.count(it->str()))
          << script << " names " << it->str() << ", which the package does not install";
  }
  std::string postinst = read_text(control / "postinst");
  EXPECT_NE(postinst.find("systemd-sysusers /usr/lib/sysusers.d/kaio.conf"), std::string::npos) << postinst;
  EXPECT_NE(postinst.find("systemd-tmpfiles --create /usr/lib/tmpfiles.d/kaio.conf"), std::string::npos) << postinst;
  std::string conffiles = read_text(control / "conffiles");
  EXPECT_EQ(conffiles, "/etc/kaio/kaiod.json\n");

  // The unit names the packaged binary and config; the config names the unit's folders and socket.
  fs::path root = dir / "root";
  ASSERT_EQ(run_command("dpkg-deb -x " + shell_quote(deb.string()) + " " + shell_quote(root.string()), 60).exit_code,
            0);
  std::string unit = read_text(root / "usr/lib/systemd/system/kaiod.service");
  EXPECT_EQ(unit.find("/usr/local"), std::string::npos) << unit;
  std::string exec = unit_value(unit, "ExecStart");
  EXPECT_EQ(exec, "/usr/bin/kaiod --config /etc/kaio/kaiod.json") << unit;
  std::string doc = unit_value(unit, "Documentation");
  ASSERT_EQ(doc.rfind("file://", 0), 0u) << doc;
  EXPECT_TRUE(contents.count(doc.substr(7))) << doc;
  std::string user = unit_value(unit, "User");
  EXPECT_NE(read_text(root / "usr/lib/sysusers.d/kaio.conf").find("u " + user + " "), std::string::npos) << user;
  EXPECT_NE(read_text(root / "usr/lib/tmpfiles.d/kaio.conf").find("d /etc/kaio "), std::string::npos);

  auto check = run_command(shell_quote((root / "usr/bin/kaiod").string()) + " --check-config " +
                               shell_quote((root / "etc/kaio/kaiod.json").string()),
                           60);
  ASSERT_EQ(check.exit_code, 0) << check.output;
  EXPECT_NE(check.output.find("cache /var/cache/" + unit_value(unit, "CacheDirectory") + ","), std::string::npos)
      << check.output;
  EXPECT_NE(check.output.find("state /var/lib/" + unit_value(unit, "StateDirectory") + "\n"), std::string::npos)
      << check.output;
  std::string etc_config = read_text(root / "etc/kaio/kaiod.json");
  EXPECT_NE(etc_config.find("\"/run/" + unit_value(unit, "RuntimeDirectory") + "/kaiod.sock\""), std::string::npos)
      << etc_config;
  EXPECT_NE(etc_config.find("127.0.0.1:9464"), std::string::npos) << etc_config;

  // The job template (docs/multi-rank.md): mpirun starts the packaged kaiod,
  // as the same user in the same folders as kaiod.service.
  std::string job_unit = read_text(root / "usr/lib/systemd/system/kaiod@.service");
  EXPECT_EQ(job_unit.find("/usr/local"), std::string::npos) << job_unit;
  EXPECT_EQ(unit_value(job_unit, "ExecStart"),
            "/usr/bin/mpirun --np %i --mca btl_vader_single_copy_mechanism none /usr/bin/kaiod --config "
            "/etc/kaio/kaiod-job.json")
      << job_unit;
  for (const char* key : {"User", "Group", "StateDirectory", "CacheDirectory", "RuntimeDirectory"})
    EXPECT_EQ(unit_value(job_unit, key), unit_value(unit, key)) << key;
  std::string job_doc = unit_value(job_unit, "Documentation");
  ASSERT_EQ(job_doc.rfind("file://", 0), 0u) << job_doc;
  EXPECT_TRUE(contents.count(job_doc.substr(7))) << job_doc;
}
