// Fidelity: the official JavaScript client (@huggingface/hub) lists (with
// pagination) and downloads (through the CDN redirect) from kaio-hub.
#include <gtest/gtest.h>

#include "tests/fetch/fetch_run.h"

namespace kaio::test {
namespace {

TEST(KaioHubNode, OfficialJsClientListsAndDownloads) {
  if (std::system("command -v node >/dev/null 2>&1") != 0) GTEST_SKIP() << "skipped: no Node";
  fs::path node_dir = fs::path(KAIO_SOURCE_DIR) / "tests" / "tools" / "kaio-hub";
  if (!fs::exists(node_dir / "node_modules" / "@huggingface" / "hub" / "package.json"))
    GTEST_SKIP() << "skipped: @huggingface/hub not installed";

  Sandbox dir("node");
  fs::path repo = dir / "root" / "org" / "videos";
  write_random(repo / "clips" / "part 1.bin", 2'500'000, 11);  // LFS: served by the CDN
  write_random(repo / "clips" / "caf\xc3\xa9.json", 3000, 12);
  write_random(repo / "a" / "b" / "c.txt", 100, 13);
  write_random(repo / "README.md", 50, 14);
  write_random(repo / "odd #1.txt", 10, 15);
  HubProcess hub(dir / "root", {"--page-size", "2", "--lfs-threshold", "1000000"});
  ASSERT_TRUE(hub.ok());

  std::string script = "cd " + shell_quote(node_dir.string()) + " && node fidelity.mjs " + shell_quote(hub.url()) +
                       " org/videos " + shell_quote((dir / "out").string());
  auto run = run_command("sh -c " + shell_quote(script), 120);
  const std::string& output = run.output;
  ASSERT_EQ(run.exit_code, 0) << output;
  auto result = nlohmann::json::parse(output.substr(output.rfind('{')));
  EXPECT_EQ(result["listed"].size(), 5u) << output;
  EXPECT_EQ(result["skipped"], nlohmann::json::array({"odd #1.txt"})) << output;
  for (const auto& path : result["listed"]) {
    if (path == "odd #1.txt") continue;
    fs::path rel = path.get<std::string>();
    ASSERT_TRUE(fs::exists(dir / "out" / rel)) << rel;
    EXPECT_EQ(sha256_of(dir / "out" / rel), sha256_of(repo / rel)) << rel;
  }
  EXPECT_GT(hub.stats()["cdn_requests"].get<int>(), 0);
}

}  // namespace
}  // namespace kaio::test
