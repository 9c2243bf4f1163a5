// `epochal train`'s metrics flags: --metrics-port, --metrics-bind, --metrics-auth-file,
// --metrics-gather-seconds, --metrics-linger. Without --metrics-port nothing listens.
#pragma once

#include <memory>

#include "epochal/metrics/exporter.h"
#include "epochal/train/trainer.h"
#include "flags.h"

namespace epochal::apps {

void AddMetricsFlags(Flags& f);

// Rank 0: validates the metrics flags, reads the auth file, and starts the exporter's
// HTTP server, printing where to scrape. Returns null when --metrics-port is absent.
// Throws InputError for a bad flag, an unreadable auth file or a port that cannot be
// bound. Other ranks: only validates the flags (so every rank agrees on failures).
std::unique_ptr<metrics::MetricsExporter> StartMetrics(const Flags& f, bool is_root);

// Rank 0, once the trainer exists: subscribes the exporter and sets the job labels and
// the timing-gather interval.
void AttachMetrics(const Flags& f, metrics::MetricsExporter& exporter, train::Trainer& trainer,
                   const std::string& run_dir, const v1::ExperimentConfig& config);

// Rank 0, after training: keeps serving the final values for --metrics-linger seconds, so
// a scraper sees them before the process ends.
void LingerForMetrics(const Flags& f, const metrics::MetricsExporter& exporter);

}  // namespace epochal::apps
