// The one-line console summary printed at the end of each epoch.
#pragma once

#include <string>

#include "epochal/train/history.h"

namespace epochal::report {

// "Epoch 3/25 - 131s - 458 img/s - loss: 0.2941 - accuracy: 0.8943 - val_loss: 0.2722 -
// val_accuracy: 0.8970" (one line, no newline). Seconds and img/s are rounded to whole
// numbers; metrics use FormatMetric.
std::string EpochSummaryLine(const train::EpochRecord& record, int total_epochs);

}  // namespace epochal::report
