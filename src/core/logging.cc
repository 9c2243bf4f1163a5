#include "epochal/core/logging.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace epochal {
namespace {
std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::mutex g_mutex;  // Guards writes to stderr, so lines stay whole.
}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(level); }
LogLevel GetLogLevel() { return g_level.load(); }

void LogLine(LogLevel level, std::string_view message) {
  static constexpr char kLetters[] = {'D', 'I', 'W', 'E'};
  std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(stderr, "[epochal] %c %.*s\n", kLetters[static_cast<int>(level)],
               static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
}

}  // namespace epochal
