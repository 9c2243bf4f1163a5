// Runs a piece of a test as an unprivileged user, so that a test of "this file cannot be
// read" means the same as root (CI runs as root, and root reads files whatever their mode).
#pragma once

#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <string>

namespace epochal::testing {

// The uid and gid of `nobody` on Debian.
inline constexpr uid_t kNobody = 65534;

// Runs `fn` in a forked child, as `nobody` when the test runs as root, and returns what it
// returned. The test must be single-threaded at the call. Returns nullopt (with the reason in
// *why) where the child cannot drop its privileges or does not finish normally. Every
// directory on the way to a file the child opens must be searchable by others (chmod 0711).
inline std::optional<std::string> RunUnprivileged(const std::function<std::string()>& fn,
                                                  std::string* why) {
  int fds[2];
  if (::pipe(fds) != 0) {
    *why = std::string("pipe: ") + std::strerror(errno);
    return std::nullopt;
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    *why = std::string("fork: ") + std::strerror(errno);
    ::close(fds[0]);
    ::close(fds[1]);
    return std::nullopt;
  }
  if (pid == 0) {
    ::close(fds[0]);
    if (::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0)) {
      ::_exit(3);
    }
    const std::string out = fn();
    const char* p = out.data();
    size_t left = out.size();
    while (left > 0) {
      const ssize_t n = ::write(fds[1], p, left);
      if (n <= 0) ::_exit(4);
      p += n;
      left -= static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *why = WIFEXITED(status) && WEXITSTATUS(status) == 3
               ? "cannot switch to uid 65534"
               : "the unprivileged child failed (status " + std::to_string(status) + ")";
    return std::nullopt;
  }
  return out;
}

}  // namespace epochal::testing
