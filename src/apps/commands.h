// The epochal commands main() dispatches to, one source file each: train_command.cc,
// evaluate_command.cc, report_command.cc (scan_command.h and ctl_command.h declare the
// other two). Each returns the process exit code; errors are exceptions main() reports.
#pragma once

#include "epochal/dist/communicator.h"

namespace epochal::apps {

// `epochal train`: trains the model of --config, validating after every epoch.
int Train(const dist::Communicator& comm, int argc, char** argv);
// `epochal evaluate`: evaluates saved weights (and with --probe, the gap terms).
int Evaluate(const dist::Communicator& comm, int argc, char** argv);
// `epochal report RUN_DIR`: re-renders a run's plots and prints its tables.
int Report(const dist::Communicator& comm, int argc, char** argv);

}  // namespace epochal::apps
