#include "epochal/dist/mpi_environment.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "epochal/core/error.h"
#include "epochal/dist/mpi_check.h"

namespace epochal::dist {

std::string ThreadLevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
    default:
      return ::epochal::detail::StrCat("thread level ", level);
  }
}

MpiEnvironment::MpiEnvironment(int* argc, char*** argv, int required, int desired)
    : uncaught_at_construction_(std::uncaught_exceptions()) {
  if (Initialized()) {
    throw Error(
        "MpiEnvironment: MPI is already initialized; create one MpiEnvironment per process");
  }
  EPOCHAL_MPI_CHECK(MPI_Init_thread(argc, argv, std::max(required, desired), &provided_));
  if (provided_ < required) {
    MPI_Finalize();
    throw SystemError(::epochal::detail::StrCat("MPI granted ", ThreadLevelName(provided_),
                                                " but epochal requires ",
                                                ThreadLevelName(required)));
  }
  // Failed calls return codes (thrown by EPOCHAL_MPI_CHECK) instead of killing the job
  // with a message that names no epochal context.
  const int rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  if (rc != MPI_SUCCESS) {
    MPI_Finalize();
    detail::ThrowMpiError(__FILE__, __LINE__, "MPI_Comm_set_errhandler", rc);
  }
}

MpiEnvironment::~MpiEnvironment() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (std::uncaught_exceptions() > uncaught_at_construction_) {
    int size = 1;
    int rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (size > 1) {
      // The other ranks may be blocked in a collective this rank will never join, and
      // MPI_Finalize would wait for them: end the job instead.
      std::fprintf(stderr,
                   "epochal: rank %d: an exception left the MPI scope; aborting all %d ranks\n",
                   rank, size);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  }
  MPI_Finalize();
}

bool MpiEnvironment::LaunchedByMpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

bool MpiEnvironment::Initialized() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

}  // namespace epochal::dist
