#include "common/fs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "tests/support/sandbox.h"

namespace fs = std::filesystem;

TEST(Fs, WritesDurablyViaATemporaryName) {
  kaio::test::Sandbox dir("fs");
  kaio::write_file_durably(dir / "a.txt", "hello");
  std::ifstream in(dir / "a.txt");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "hello");
  EXPECT_FALSE(fs::exists(dir / "a.txt.tmp"));
  EXPECT_GE(kaio::disk_usage(dir), 4096u);  // the folder itself and one block of data
}

TEST(Fs, ErrorsNameThePath) {
  try {
    kaio::write_file_durably("/nonexistent-dir/x", "data");
    FAIL();
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/x"), std::string::npos);
  }
}

// A full device is its own kind of error: kaiod waits for space and redoes the
// work instead of failing the file.
TEST(Fs, FullDeviceIsDiskFull) {
  int fd = ::open("/dev/full", O_WRONLY);
  if (fd < 0) GTEST_SKIP() << "skipped: no /dev/full here";
  char byte = 'x';
  ASSERT_LT(::write(fd, &byte, 1), 0);
  ::close(fd);
  try {
    kaio::throw_errno("write", "/dev/full");
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::disk_full);
    EXPECT_NE(std::string(e.what()).find("/dev/full"), std::string::npos) << e.what();
    return;
  }
  FAIL() << "throw_errno returned";
}

// The budget samplers walk folders that kaiod changes under them: a folder
// removed mid-walk must not hide the bytes of the ones walked after it.
TEST(Fs, DiskUsageCountsEverythingWhileFoldersVanish) {
  kaio::test::Sandbox dir("fs-churn");
  fs::create_directories(dir / "kept");
  std::ofstream(dir / "kept" / "data.bin") << std::string(1 << 20, 'k');
  const uint64_t kept = kaio::disk_usage(dir / "kept");
  ASSERT_GE(kept, uint64_t{1} << 20);
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    for (int i = 0; !stop; i = (i + 1) % 64) {
      fs::path d = dir / ("churn-" + std::to_string(i));
      std::error_code ec;
      fs::create_directories(d / "inner", ec);
      std::ofstream(d / "inner" / "f") << "x";
      fs::remove_all(d, ec);
    }
  });
  int undercounts = 0;
  for (int i = 0; i < 2000; ++i)
    if (kaio::disk_usage(dir) < kept) ++undercounts;
  stop = true;
  churn.join();
  EXPECT_EQ(undercounts, 0) << "of 2000 walks";
}
