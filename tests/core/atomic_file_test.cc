#include "epochal/core/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "../report/temp_dir.h"
#include "epochal/core/error.h"

namespace epochal {
namespace {

using report::testing::ReadFile;
using report::testing::TempDir;

TEST(AtomicFileTest, WritesNewFileAndLeavesNoTemporary) {
  TempDir dir;
  const auto path = dir.path() / "report.txt";
  WriteFileAtomic(path, "hello\n");
  EXPECT_EQ(ReadFile(path), "hello\n");
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "report.txt.tmp"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

TEST(AtomicFileTest, ReplacesExistingFile) {
  TempDir dir;
  const auto path = dir.path() / "history.csv";
  WriteFileAtomic(path, std::string(10000, 'x'));
  WriteFileAtomic(path, "short");
  EXPECT_EQ(ReadFile(path), "short");
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "history.csv.tmp"));
}

TEST(AtomicFileTest, WritesEmptyText) {
  TempDir dir;
  const auto path = dir.path() / "empty.txt";
  WriteFileAtomic(path, "");
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_EQ(std::filesystem::file_size(path), 0u);
}

TEST(AtomicFileTest, UnwritableDirectoryThrowsSystemErrorNamingPath) {
  TempDir dir;
  // A regular file where a directory should be: fails even for root, unlike chmod.
  WriteFileAtomic(dir.path() / "plain", "x");
  const auto path = dir.path() / "plain" / "report.txt";
  try {
    WriteFileAtomic(path, "data");
    FAIL() << "expected SystemError";
  } catch (const SystemError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find("Not a directory"), std::string::npos) << message;
  }
}

TEST(AtomicFileTest, MissingDirectoryThrowsSystemError) {
  TempDir dir;
  const auto path = dir.path() / "missing" / "report.txt";
  try {
    WriteFileAtomic(path, "data");
    FAIL() << "expected SystemError";
  } catch (const SystemError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
  }
}

TEST(AtomicFileTest, InterruptedWriteLeavesThePreviousFile) {
  TempDir dir;
  const auto path = dir.path() / "ckpt.epck";
  WriteFileAtomic(path, "old");
  const std::string big(1 << 16, 'n');
  bool called = false;
  try {
    WriteFileAtomic(path, big, [&] {
      called = true;
      EXPECT_EQ(ReadFile(path), "old");  // Half written: the real name is untouched.
      throw SystemError("simulated crash");
    });
    FAIL() << "expected the hook's error";
  } catch (const SystemError&) {
  }
  EXPECT_TRUE(called);
  EXPECT_EQ(ReadFile(path), "old");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);  // The temporary is gone.
}

}  // namespace
}  // namespace epochal
