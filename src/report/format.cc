#include "epochal/report/format.h"

#include <cmath>
#include <cstdint>
#include <cstdio>

namespace epochal::report {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0.0) return "-";
  const auto s = static_cast<int64_t>(seconds);
  char buf[48];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60), static_cast<long long>(s % 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  }
  return buf;
}

std::string FormatMetric(double value) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), std::fabs(value) > 1e-3 ? "%.4f" : "%.4e", value);
  return buf;
}

}  // namespace epochal::report
