// Launched by mpiexec with 2 ranks: rank 1 fails while rank 0 waits in a collective; the
// job must end (with Open MPI's "MPI_ABORT was invoked" notice) instead of hanging.
//
//   abort_probe abort   rank 1 calls Communicator::Abort(3)
//   abort_probe unwind  rank 1 throws; the exception unwinds through MpiEnvironment
#include <cstdio>
#include <stdexcept>
#include <string>

#include "epochal/dist/communicator.h"
#include "epochal/dist/mpi_environment.h"

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    epochal::dist::MpiEnvironment mpi(&argc, &argv);
    epochal::dist::Communicator world;
    if (world.rank() == 1) {
      if (mode == "abort") {
        std::fprintf(stderr, "rank 1: aborting all %d ranks\n", world.size());
        world.Abort(3);
      }
      throw std::runtime_error("rank 1 fails");
    }
    world.Barrier();  // never completes: rank 1 never gets here
    std::printf("rank %d: barrier returned\n", world.rank());
    return 0;
  } catch (const std::exception& e) {
    std::printf("caught: %s\n", e.what());
    return 2;
  }
}
