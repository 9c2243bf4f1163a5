// The checkpoint side of `epochal train`: its flags, the checkpoint store rank 0 writes
// to, and the choice of the checkpoint --resume continues from (docs/fault-tolerance.md).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "epochal/train/checkpoint.h"
#include "epochal/v1/config.pb.h"
#include "flags.h"

namespace epochal::apps {

// Declares --resume, --checkpoint-every-steps, --keep-checkpoints, --no-checkpoints.
void AddCheckpointFlags(Flags& f);
// Applies those flags to `config` (before validation).
void ApplyCheckpointFlags(const Flags& f, v1::ExperimentConfig* config);

struct CheckpointSetup {
  std::unique_ptr<train::CheckpointStore> store;  // Null when checkpoints are disabled.
  std::optional<train::FoundCheckpoint> resume;   // What --resume chose, if anything.
};

// Rank 0, during start-up: opens <out>/checkpoints (InputError if it cannot be written)
// and, with --resume, picks the checkpoint: "auto" the newest good one in
// <out>/checkpoints (each bad one is reported with a warning and skipped; none at all
// starts the run from scratch), else the given file, which must verify. The checkpoint's
// config must match `config` (CheckResumeCompatible) and its rank count `world_size`.
CheckpointSetup PrepareCheckpoints(const Flags& f, const v1::ExperimentConfig& config,
                                   const std::filesystem::path& out, int world_size);

}  // namespace epochal::apps
