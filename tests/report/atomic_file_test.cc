#include "epochal/report/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "epochal/core/error.h"
#include "temp_dir.h"

namespace epochal::report {
namespace {

using testing::ReadFile;
using testing::TempDir;

TEST(AtomicFileTest, WritesNewFileAndLeavesNoTemporary) {
  TempDir dir;
  const auto path = dir.path() / "report.txt";
  WriteTextFileAtomic(path, "hello\n");
  EXPECT_EQ(ReadFile(path), "hello\n");
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "report.txt.tmp"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);
}

TEST(AtomicFileTest, ReplacesExistingFile) {
  TempDir dir;
  const auto path = dir.path() / "history.csv";
  WriteTextFileAtomic(path, std::string(10000, 'x'));
  WriteTextFileAtomic(path, "short");
  EXPECT_EQ(ReadFile(path), "short");
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "history.csv.tmp"));
}

TEST(AtomicFileTest, WritesEmptyText) {
  TempDir dir;
  const auto path = dir.path() / "empty.txt";
  WriteTextFileAtomic(path, "");
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_EQ(std::filesystem::file_size(path), 0u);
}

TEST(AtomicFileTest, UnwritableDirectoryThrowsSystemErrorNamingPath) {
  TempDir dir;
  // A regular file where a directory should be: fails even for root, unlike chmod.
  WriteTextFileAtomic(dir.path() / "plain", "x");
  const auto path = dir.path() / "plain" / "report.txt";
  try {
    WriteTextFileAtomic(path, "data");
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
    WriteTextFileAtomic(path, "data");
    FAIL() << "expected SystemError";
  } catch (const SystemError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace epochal::report
