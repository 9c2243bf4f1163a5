// Errors. Inside a process epochal reports failures with exceptions derived from
// epochal::Error; `main` catches them once, prints the message and exits non-zero.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace epochal {

// Base of every error epochal throws on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad user input: a flag, a config field, a data file. The message names the source.
class InputError : public Error {
 public:
  using Error::Error;
};

// A failure reported by a library epochal calls (oneDNN, zlib, the OS).
class SystemError : public Error {
 public:
  using Error::Error;
};

namespace detail {
// Builds a message from streamable parts: StrCat("file ", path, ": bad").
template <typename... Args>
std::string StrCat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace epochal

// Throws epochal::Error (with file and line) when `cond` is false. For invariants that
// signal a bug, not bad input.
#define EPOCHAL_CHECK(cond, ...)                                                  \
  do {                                                                            \
    if (!(cond)) {                                                                \
      throw ::epochal::Error(::epochal::detail::StrCat(                           \
          __FILE__, ":", __LINE__, ": check failed: " #cond " ", ##__VA_ARGS__)); \
    }                                                                             \
  } while (0)
