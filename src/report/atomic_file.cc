#include "epochal/report/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <system_error>

#include "epochal/core/error.h"

namespace epochal::report {
namespace {

[[noreturn]] void Fail(const std::filesystem::path& path, const char* what, int err) {
  // error_category::message is thread-safe, unlike strerror.
  throw SystemError(detail::StrCat("cannot write ", path.string(), ": ", what, ": ",
                                   std::generic_category().message(err)));
}

// Closes the descriptor and removes the temporary file unless released.
class TempFile {
 public:
  explicit TempFile(std::filesystem::path path) : path_(std::move(path)) {}
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  int fd_ = -1;
  bool committed_ = false;

 private:
  std::filesystem::path path_;
};

void WriteAll(int fd, std::string_view text, const std::filesystem::path& path) {
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      Fail(path, "write", errno);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

void WriteTextFileAtomic(const std::filesystem::path& path, std::string_view text) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Fail(path, "open", errno);
  TempFile guard(tmp);
  guard.fd_ = fd;
  WriteAll(fd, text, path);
  if (::fsync(fd) != 0) Fail(path, "fsync", errno);
  guard.fd_ = -1;
  // close() can report a deferred write error (e.g. on NFS); it must not be ignored.
  if (::close(fd) != 0) Fail(path, "close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) Fail(path, "rename", errno);
  guard.committed_ = true;

  // Make the rename itself durable. A directory that cannot be opened or synced (some
  // file systems refuse) leaves the file complete, so this is best effort.
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

}  // namespace epochal::report
