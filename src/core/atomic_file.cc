#include "epochal/core/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>

#include "epochal/core/error.h"

namespace epochal {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void Fail(const fs::path& path, const char* what, int err) {
  // error_category::message is thread-safe, unlike strerror.
  throw SystemError(detail::StrCat("cannot write ", path.string(), ": ", what, ": ",
                                   std::generic_category().message(err)));
}

// Closes the descriptor and removes the temporary file unless committed.
class TempFile {
 public:
  explicit TempFile(fs::path path) : path_(std::move(path)) {}
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!committed) ::unlink(path_.c_str());
  }
  int fd = -1;
  bool committed = false;

 private:
  fs::path path_;
};

}  // namespace

void WriteFileAtomic(const fs::path& path, std::string_view bytes,
                     const std::function<void()>& after_partial_write) {
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Fail(path, "open", errno);
  TempFile guard(tmp);
  guard.fd = fd;
  size_t done = 0;
  bool partial_reported = !after_partial_write;
  while (done < bytes.size()) {
    size_t chunk = bytes.size() - done;
    if (!partial_reported) chunk = std::max<size_t>(1, bytes.size() / 2 - done);
    const ssize_t n = ::write(fd, bytes.data() + done, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      Fail(path, "write", errno);
    }
    done += static_cast<size_t>(n);
    if (!partial_reported && done >= bytes.size() / 2) {
      partial_reported = true;
      after_partial_write();
    }
  }
  if (::fsync(fd) != 0) Fail(path, "fsync", errno);
  guard.fd = -1;
  // close() can report a deferred write error (NFS, some quota systems).
  if (::close(fd) != 0) Fail(path, "close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) Fail(path, "rename", errno);
  guard.committed = true;
  fs::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) Fail(dir, "open directory", errno);
  // Without this the rename may not survive a power loss; some file systems refuse to
  // sync a directory (EINVAL), which is not a failure of the write.
  if (::fsync(dir_fd) != 0 && errno != EINVAL) {
    const int err = errno;
    ::close(dir_fd);
    Fail(dir, "fsync directory", err);
  }
  ::close(dir_fd);
}

}  // namespace epochal
