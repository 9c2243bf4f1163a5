// `epochal scan`: the train/validation leakage scan (include/epochal/data/leakage.h) as a
// subcommand, sharded over MPI ranks when started by a launcher.
#pragma once

#include <string>

#include "epochal/data/leakage.h"
#include "epochal/dist/communicator.h"

namespace epochal::apps {

// Runs `epochal scan` with argv[2..] as its flags and returns the exit status.
//
// Collective: every rank of `comm` calls it. Each rank loads both splits, scans its
// contiguous share of the validation rows (data::ShardRange) and sends its partial report
// to rank 0, which adds the split statistics, prints the summary and writes --json.
// Start-up failures (a bad flag value, an unreadable file, a shape mismatch) are agreed on
// by all ranks: the first failing rank prints the message and every rank returns 2 for bad
// input, 1 otherwise. An unknown flag throws InputError (as for the other subcommands);
// later failures throw, and `main` ends the job.
int Scan(const dist::Communicator& comm, int argc, char** argv);

// Scans `val` against `train`, each rank taking a contiguous share of the validation
// samples. Rank 0 gets the merged report; every rank gets the total counts (exact,
// near, label_conflicts). A collective.
data::LeakageReport ShardedLeakageScan(const dist::Communicator& comm, const data::Dataset& train,
                                       const data::Dataset& val,
                                       const data::LeakageOptions& options);
// The human-readable summary `epochal scan` prints.
std::string LeakageSummary(const data::LeakageReport& report, const data::Dataset& train,
                           const data::Dataset& val, int ranks);

}  // namespace epochal::apps
