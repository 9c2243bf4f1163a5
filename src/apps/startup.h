// Start-up shared by the epochal subcommands under MPI: reading flags, config and data
// happens on every rank before the first collective, and the ranks then agree on the
// outcome, so a bad file on one rank ends every rank at once with the cause printed once.
#pragma once

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <iostream>
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

// The cores this rank may use: the CPUs of its affinity mask (what taskset, a cgroup
// cpuset, Slurm or mpirun's binding allow), divided among the ranks on its node.
inline int CoresForThisRank() {
  cpu_set_t set;
  CPU_ZERO(&set);
  const int cpus =
      ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : omp_get_num_procs();
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks_here = local != nullptr ? std::max(1, std::atoi(local)) : 1;
  return std::max(1, cpus / ranks_here);
}

// --threads, capped at this rank's cores unless --oversubscribe-threads insists (more
// threads than cores only makes them wait for each other: 1000 on 2 cores ran at 0
// images/s), with one line on stderr; without --threads, with several ranks per node, the node's
// cores shared between them. `report`: print one line when --threads is capped (rank 0).
inline void SetThreadsPerRank(const Flags& f, bool report = true) {
  const int cores = CoresForThisRank();
  if (auto v = f.GetInt("threads", 1, 4096)) {
    int threads = static_cast<int>(*v);
    if (threads > cores && !f.Has("oversubscribe-threads")) {
      if (report) {
        // stderr: stdout may be a --json document.
        std::cerr << "epochal: --threads " << threads << " is more than the " << cores
                  << " cores this rank can use; using " << cores
                  << " (--oversubscribe-threads keeps " << threads << ")" << std::endl;
      }
      threads = cores;
    }
    omp_set_num_threads(threads);
    return;
  }
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (local != nullptr && std::atoi(local) > 1) omp_set_num_threads(cores);
}

}  // namespace epochal::apps
