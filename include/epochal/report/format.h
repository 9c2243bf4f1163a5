// Text formatting shared by the console outputs, matching Keras' progress bar.
#pragma once

#include <string>

namespace epochal::report {

// Keras' duration style: "42s", "1:42", "1:02:03" (seconds rounded down; negative or
// non-finite values print as "-").
std::string FormatDuration(double seconds);

// Keras' metric style: "%.4f", or "%.4e" when |value| <= 1e-3 (e.g. "0.5433").
std::string FormatMetric(double value);

}  // namespace epochal::report
