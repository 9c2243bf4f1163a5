// Start-up shared by the epochal subcommands under MPI: reading flags, config and data
// happens on every rank before the first collective, and the ranks then agree on the
// outcome, so a bad file on one rank ends every rank at once with the cause printed once.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <string>

#include "epochal/core/error.h"
#include "epochal/dist/communicator.h"
#include "flags.h"

namespace epochal::apps {

// Thrown when start-up failed on some rank. Every rank throws it with the same exit
// code; only the first failing rank carries the message. `main` prints and returns it.
struct StartupFailure {
  std::string message;  // Empty on every rank but the first failing one.
  int exit_code;
};

// Runs `prepare` (nothing collective in it) on every rank, then agrees on the outcome in
// two small collectives.
template <typename F>
void AgreeOnStartup(const dist::Communicator& comm, F&& prepare) {
  std::string error;
  int code = 0;
  try {
    prepare();
  } catch (const InputError& e) {
    error = e.what();
    code = 2;
  } catch (const std::exception& e) {
    error = e.what();
    code = 1;
  }
  const int64_t worst = comm.AllreduceMax(code);
  if (worst == 0) return;
  const int64_t first = comm.AllreduceMin(code != 0 ? comm.rank() : comm.size());
  if (comm.size() > 1 && !error.empty())
    error = "rank " + std::to_string(comm.rank()) + ": " + error;
  throw StartupFailure{first == comm.rank() ? error : "", static_cast<int>(worst)};
}

// --threads, or with several ranks per node the node's cores shared between them.
inline void SetThreadsPerRank(const Flags& f) {
  if (auto v = f.GetInt("threads", 1, 4096)) {
    omp_set_num_threads(static_cast<int>(*v));
    return;
  }
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks_here = local != nullptr ? std::max(1, std::atoi(local)) : 1;
  if (ranks_here > 1) omp_set_num_threads(std::max(1, omp_get_num_procs() / ranks_here));
}

}  // namespace epochal::apps
