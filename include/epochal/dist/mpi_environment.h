// MpiEnvironment: the process's one MPI_Init_thread / MPI_Finalize pair.
//
// `main` creates one when the process was started by an MPI launcher (LaunchedByMpi())
// and none otherwise, so a plain `epochal train` never touches MPI and uses
// Communicator::Solo(). The constructor checks the granted thread level: the main thread
// makes every MPI call except the gradient bucketer's progress thread's MPI_Test, so
// MPI_THREAD_FUNNELED is required and MPI_THREAD_MULTIPLE wanted (`desired`); without it
// the bucketer polls from the main thread instead.
//
// Errors: the constructor sets MPI_ERRORS_RETURN on MPI_COMM_WORLD, so failed MPI calls
// come back as codes that EPOCHAL_MPI_CHECK turns into SystemError. An exception that
// reaches `main` on one rank must end every rank, or the others wait forever in their
// next collective. The intended shape of `main`:
//
//   std::optional<dist::MpiEnvironment> mpi;
//   if (dist::MpiEnvironment::LaunchedByMpi()) mpi.emplace(&argc, &argv);
//   dist::Communicator world = dist::Communicator::WorldOrSolo();
//   try {
//     return Run(world);
//   } catch (const std::exception& e) {
//     std::cerr << "epochal: rank " << world.rank() << ": " << e.what() << "\n";
//     if (world.size() > 1) world.Abort(1);  // ends all ranks now
//     return 1;
//   }
//
// As a safety net, a destructor run while an exception unwinds through it (one that was
// thrown after the constructor) aborts the whole job instead of calling MPI_Finalize,
// which in Open MPI waits for every rank and would hang the job.
//
// Thread safety: construct and destroy on the main thread. The static functions may be
// called from any thread.
#pragma once

#include <mpi.h>

#include <string>

namespace epochal::dist {

class MpiEnvironment {
 public:
  // Calls MPI_Init_thread(argc, argv, max(required, desired)). Throws Error when MPI is
  // already initialized, SystemError when initialization fails or the granted level is
  // below `required` (MPI is finalized again before that throw; the message names both
  // levels). A level between `required` and `desired` is accepted: see provided().
  explicit MpiEnvironment(int* argc, char*** argv, int required = MPI_THREAD_FUNNELED,
                          int desired = MPI_THREAD_SINGLE);
  // Calls MPI_Finalize, or MPI_Abort(MPI_COMM_WORLD, 1) when an exception is unwinding
  // through it and the job has more than one rank (see the file comment).
  ~MpiEnvironment();

  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  // The thread level MPI granted (>= the required one).
  int provided() const { return provided_; }

  // True when an MPI launcher started this process: OMPI_COMM_WORLD_SIZE (Open MPI's
  // mpiexec), PMI_SIZE (Slurm's PMI-1/2, MPICH) or PMIX_RANK (PMIx, srun --mpi=pmix) is
  // set.
  static bool LaunchedByMpi();
  // True between MPI_Init_thread and MPI_Finalize, whoever called them.
  static bool Initialized();

 private:
  int provided_ = MPI_THREAD_SINGLE;
  int uncaught_at_construction_ = 0;
};

// "MPI_THREAD_FUNNELED" for MPI_THREAD_FUNNELED, and so on; "thread level <n>" otherwise.
std::string ThreadLevelName(int level);

}  // namespace epochal::dist
