#include "epochal/report/epoch_summary.h"

#include <cstdio>

#include "epochal/report/format.h"

namespace epochal::report {

std::string EpochSummaryLine(const train::EpochRecord& record, int total_epochs) {
  char head[96];
  std::snprintf(head, sizeof(head), "Epoch %d/%d - %.0fs - %.0f img/s", record.epoch, total_epochs,
                record.seconds, record.images_per_second);
  return std::string(head) + " - loss: " + FormatMetric(record.loss) +
         " - accuracy: " + FormatMetric(record.accuracy) +
         " - val_loss: " + FormatMetric(record.val_loss) +
         " - val_accuracy: " + FormatMetric(record.val_accuracy);
}

}  // namespace epochal::report
