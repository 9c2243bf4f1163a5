// The control plane in the epochal binary: `epochal train`'s --control-* flags (rank 0
// serves epochal.v1.TrainingControl) and the `epochal ctl` subcommand that talks to it.
#pragma once

#include <memory>

#include "epochal/dist/communicator.h"
#include "epochal/train/control_source.h"
#include "epochal/train/diagnosis.h"
#include "epochal/train/observer.h"
#include "epochal/v1/config.pb.h"
#include "flags.h"

namespace epochal::apps {

// Declares --control-port, --control-bind, --control-token-file, --control-tls-*,
// --control-max-lr on `epochal train`.
void AddControlFlags(Flags& f);

// The running control plane of a job (rank 0 only).
class ControlPlane {
 public:
  virtual ~ControlPlane() = default;
  // What the trainer consults and informs.
  virtual train::ControlSource* source() = 0;
  virtual train::TrainingObserver* observer() = 0;
};

// Starts the control plane on rank 0 when --control-port is given (null otherwise, and on
// every other rank) and prints "control: HOST:PORT". Call it inside AgreeOnStartup: the
// files are read on rank 0 only. `stop_after_step` (0: none) is
// folded in, as the trainer has one control source. Throws InputError for bad flags
// (e.g. a token without TLS on a non-loopback bind), SystemError when it cannot listen.
std::unique_ptr<ControlPlane> StartControlPlane(const Flags& f, const dist::Communicator& comm,
                                                const v1::ExperimentConfig& config,
                                                const train::Diagnosis* diagnosis,
                                                int64_t stop_after_step);

// `epochal ctl ...`: returns the exit code (the gRPC status code).
int Ctl(int argc, char** argv);

}  // namespace epochal::apps
