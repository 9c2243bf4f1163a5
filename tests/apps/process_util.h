// Helpers for end-to-end tests that run the built epochal binary (directly or under
// mpiexec) as a child process: a self-removing temporary directory, a run of a command
// under `timeout` with its output captured, and small string and file helpers.
//
// Header-only and test-only: failures to set things up are reported with gtest's
// ADD_FAILURE, so include it from gtest binaries only. Nothing here is thread-safe; call it
// from the test's main thread.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

extern char** environ;

namespace epochal::test {

// The whole of the file at `path`; empty when it cannot be read.
inline std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A directory made by mkdtemp under $TMPDIR (else /tmp), named `<prefix>.XXXXXX`, removed
// with its contents on destruction. Non-copyable: it owns the directory.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "epochal_test") {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = (std::filesystem::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") /
                           (std::string(prefix) + ".XXXXXX"))
                              .string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp " << pattern << ": " << std::strerror(errno);
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// How a child process ended and what it printed.
struct Outcome {
  bool exited = false;  // false: killed by a signal
  int code = -1;        // exit status when `exited`, else the signal number
  std::string out;
  std::string err;
  double seconds = 0;  // wall time from start to reaping

  bool Succeeded() const { return exited && code == 0; }
  // "exit 2" or "signal 11 (Segmentation fault)", then the captured stderr, for messages.
  std::string Describe() const {
    std::string s = exited ? "exit " + std::to_string(code)
                           : "signal " + std::to_string(code) + " (" + strsignal(code) + ")";
    if (exited && code == 124) s += " (timed out)";
    return s + "; stderr:\n" + err;
  }
};

// Runs `timeout -k 10 <timeout_seconds> COMMAND...` with stdin from /dev/null and stdout
// and stderr captured through stdout.txt and stderr.txt in `scratch` (overwritten), in the
// environment of this process plus `extra_env` ("NAME=value" entries, which win over
// inherited ones); returns how it ended. A command that runs past the limit is killed
// (and its exit status is 124), so a hang fails the test instead of stalling CTest.
inline Outcome RunWithTimeout(const std::filesystem::path& scratch, int timeout_seconds,
                              const std::vector<std::string>& command,
                              const std::vector<std::string>& extra_env = {}) {
  std::vector<std::string> argv_text = {"timeout", "-k", "10", std::to_string(timeout_seconds)};
  argv_text.insert(argv_text.end(), command.begin(), command.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_text = extra_env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const size_t eq = entry.find('=');
    const std::string name_eq(entry.substr(0, eq == std::string_view::npos ? 0 : eq + 1));
    bool overridden = false;
    for (const std::string& x : extra_env) {
      overridden = overridden || (!name_eq.empty() && x.starts_with(name_eq));
    }
    if (!overridden) env_text.emplace_back(entry);
  }
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);

  const std::string out_path = (scratch / "stdout.txt").string();
  const std::string err_path = (scratch / "stderr.txt").string();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = -1;
  const int spawn_error =
      posix_spawnp(&pid, "timeout", &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  Outcome o;
  if (spawn_error != 0) {
    ADD_FAILURE() << "cannot start timeout " << (command.empty() ? "" : command[0]) << ": "
                  << std::strerror(spawn_error);
    return o;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      ADD_FAILURE() << "waitpid: " << std::strerror(errno);
      return o;
    }
  }
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  o.exited = WIFEXITED(status);
  o.code = o.exited ? WEXITSTATUS(status) : WTERMSIG(status);
  o.out = ReadFile(out_path);
  o.err = ReadFile(err_path);
  return o;
}

}  // namespace epochal::test
