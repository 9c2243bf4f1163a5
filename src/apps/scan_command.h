// `epochal scan`: the train/validation leakage scan (include/epochal/data/leakage.h) as a
// subcommand, sharded over MPI ranks when started by a launcher.
#pragma once

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

}  // namespace epochal::apps
