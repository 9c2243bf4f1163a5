// The state a run needs to continue exactly (docs/fault-tolerance.md), and the one pair
// of functions that turns it into a checkpoint (v1::Checkpoint) and back.
//
// What is stored: the model's parameters and running statistics (every rank's, since
// they are rank-local until the epoch end), the optimizer's momentum, iteration count and
// rate override, the position in the run (epoch, batches done, global step), the running
// sums of the epoch in progress, and the history. No RNG state: every random choice is a
// pure function of (seed, epoch, sample id).
//
// Thread safety: none; the training thread calls these.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "epochal/dist/communicator.h"
#include "epochal/nn/model.h"
#include "epochal/optim/sgd.h"
#include "epochal/train/history.h"
#include "epochal/v1/checkpoint.pb.h"
#include "epochal/v1/config.pb.h"

namespace epochal::train {

// The running sums of the epoch in progress.
struct EpochSums {
  double loss_sum = 0.0;  // Of per-sample losses (L2 penalty included).
  int64_t correct = 0, seen = 0, steps = 0;
  double last_lr = 0.0;  // The rate of the epoch's last step.
};

// Where a run stands, besides its tensors.
struct RunState {
  // The run's id (checkpoint.proto's run_id), from rank 0's checkpoint store or from the
  // checkpoint resumed; "" for a run resumed from a checkpoint written before run ids.
  std::string run_id;
  int epoch = 1;             // The epoch in progress (the next one after an epoch end).
  int64_t batches_done = 0;  // Of that epoch.
  int64_t global_step = 0;   // Steps done since the run started.
  EpochSums sums;            // Of that epoch so far.
  History history;
};

// Collective (every rank calls it; rank-local running statistics are gathered): the
// checkpoint of `model`, `sgd` and `state`, filled on rank 0 and empty elsewhere.
// `batches_per_epoch` records the sampler's epoch length; `reason` says why ("epoch",
// "steps", "control", "stop"). Throws Error when a tensor holds a non-finite value.
v1::Checkpoint SnapshotState(const v1::ExperimentConfig& config, const dist::Communicator& comm,
                             nn::Model& model, optim::Sgd& sgd, const RunState& state,
                             int64_t batches_per_epoch, const std::string& reason);

// Restores `model`, `sgd` and `state` (its position, sums and records; the history's
// config and rank count stay) from `checkpoint`, with this rank's own running statistics
// when the writer had as many ranks. Throws Error when the checkpoint does not fit the
// model or its epochs have another length.
void RestoreState(const v1::Checkpoint& checkpoint, const dist::Communicator& comm,
                  nn::Model& model, optim::Sgd& sgd, int64_t batches_per_epoch, RunState* state);

// False when `values` hold a NaN or an infinity.
bool AllFinite(std::span<const float> values);

}  // namespace epochal::train
