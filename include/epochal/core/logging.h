// Minimal leveled logging to stderr. Thread safety: each call writes one whole line
// under a mutex, so lines from different threads never interleave.
#pragma once

#include <string_view>

#include "epochal/core/error.h"

namespace epochal {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Writes "[epochal] W message" to stderr when `level` is enabled.
void LogLine(LogLevel level, std::string_view message);

}  // namespace epochal

#define EPOCHAL_LOG(level, ...)                                                               \
  do {                                                                                        \
    if (::epochal::LogLevel::level >= ::epochal::GetLogLevel())                               \
      ::epochal::LogLine(::epochal::LogLevel::level, ::epochal::detail::StrCat(__VA_ARGS__)); \
  } while (0)
