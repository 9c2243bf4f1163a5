// The epochal command-line tool. main() starts MPI when a launcher started the process,
// dispatches to one command (one source file each), and turns an escaping exception into
// a message and an exit code (ending every rank when there are several).
#include <iostream>
#include <optional>
#include <string>

#include "commands.h"
#include "ctl_command.h"
#include "epochal/core/error.h"
#include "epochal/dist/communicator.h"
#include "epochal/dist/mpi_environment.h"
#include "export_command.h"
#include "scan_command.h"
#include "startup.h"

namespace epochal::apps {
namespace {

constexpr char kUsage[] = R"(usage: epochal <command> [flags]

epochal trains convolutional networks with oneDNN and explains, every epoch, why the
validation loss sits where it does against the training loss.

commands:
  train      train a model described by a config file (configs/*.textproto)
  evaluate   evaluate saved weights on the validation split
  scan       look for validation samples that leak from the training set
  report     re-render a run's plots and print its table, decomposition and diagnosis;
             --html writes one self-contained report.html
  export     write trained weights as an ONNX model (--format onnx)
  ctl        steer a running job (train --control-port): status, pause, set-lr, stop...

Run 'epochal <command> --help' for the flags of a command.
)";

}  // namespace
}  // namespace epochal::apps

int main(int argc, char** argv) {
  using namespace epochal;
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "ctl") {  // A client: no MPI.
    try {
      return apps::Ctl(argc, argv);
    } catch (const std::exception& e) {
      std::cerr << "epochal ctl: error: " << e.what() << "\n";
      return 2;
    }
  }
  // MPI only when a launcher started us: a plain `epochal train` needs no MPI at all.
  std::optional<dist::MpiEnvironment> mpi;
  std::optional<dist::Communicator> comm;
  try {
    // MPI_THREAD_MULTIPLE when available lets the gradient all-reduce progress on its own
    // thread (training.allreduce_progress); the main thread alone needs only FUNNELED.
    if (dist::MpiEnvironment::LaunchedByMpi()) {
      mpi.emplace(&argc, &argv, MPI_THREAD_FUNNELED, MPI_THREAD_MULTIPLE);
    }
    comm.emplace(dist::Communicator::WorldOrSolo());
  } catch (const std::exception& e) {
    std::cerr << "epochal: cannot start MPI: " << e.what() << "\n";
    return 1;
  }
  const std::string who =
      comm->size() > 1 ? " (rank " + std::to_string(comm->rank()) + ")" : std::string();
  int code = 0;
  std::string error;
  try {
    if (command == "train") return apps::Train(*comm, argc, argv);
    if (command == "evaluate") return apps::Evaluate(*comm, argc, argv);
    if (command == "scan") return apps::Scan(*comm, argc, argv);
    if (command == "report") return apps::Report(*comm, argc, argv);
    if (command == "export") return apps::Export(*comm, argc, argv);
    if (command == "--help" || command == "-h" || command == "help") {
      if (comm->is_root()) std::cout << apps::kUsage;
      return 0;
    }
    if (comm->is_root()) {
      std::cerr << (command.empty() ? "epochal: no command given\n"
                                    : "epochal: unknown command '" + command + "'\n")
                << apps::kUsage;
    }
    return 2;
  } catch (const apps::StartupFailure& f) {
    // Every rank agreed on the failure; the first failing rank says why.
    if (!f.message.empty()) std::cerr << "epochal " << command << ": error: " << f.message << "\n";
    return f.exit_code;
  } catch (const InputError& e) {
    error = e.what();
    code = 2;
  } catch (const std::exception& e) {
    error = e.what();
    code = 1;
  }
  std::cerr << "epochal " << command << who << ": error: " << error << "\n";
  // A failure on one rank after start-up would leave the others blocked in their next
  // collective: end the whole job now.
  if (comm->size() > 1) comm->Abort(code);
  return code;
}
