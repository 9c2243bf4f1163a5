// The checkpoint side of `epochal train`: its flags, the run directory (--out, reused only
// with --resume or --overwrite), the checkpoint store rank 0 writes to, the choice of the
// checkpoint --resume continues from, and the command that continues a stopped run
// (docs/fault-tolerance.md).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "epochal/train/checkpoint.h"
#include "epochal/v1/config.pb.h"
#include "flags.h"

namespace epochal::apps {

// The parent of the default run directories ("runs/<timestamp>"), relative to the
// working directory; `--resume auto` without --out looks for runs there.
inline constexpr char kDefaultRunsParent[] = "runs";

// The files `epochal train` writes into its run directory (besides checkpoints/);
// --overwrite removes an earlier run's copies of them.
inline const std::vector<std::string> kRunFiles = {
    "config.textproto", "history.json",   "history.csv", "batches.csv",
    "weights.pb",       "report.txt",     "report.html", "diagnosis.json",
    "leakage.json",     "loss_shift.svg", "gap.svg"};

// Declares --resume, --overwrite, --checkpoint-every-steps, --keep-checkpoints,
// --no-checkpoints.
void AddCheckpointFlags(Flags& f);
// Applies those flags to `config` (before validation).
void ApplyCheckpointFlags(const Flags& f, v1::ExperimentConfig* config);

// Rank 0, during start-up: the run directory, created. --out if given; else, with
// `--resume auto`, the run of this config under runs/ whose newest checkpoint is the
// newest (said on stdout; none: a new directory); else a new runs/<timestamp>. A
// directory that holds a run (anything but a config.textproto and a checkpoints/ without
// checkpoints, which a run that failed at start-up leaves) is refused (InputError naming
// it and both flags) unless --resume continues its run or --overwrite starts a new one
// there, which removes the earlier run's kRunFiles (its checkpoints stay, told apart by
// their run id).
std::string PrepareRunDir(const Flags& f, const v1::ExperimentConfig& config);

struct CheckpointSetup {
  std::unique_ptr<train::CheckpointStore> store;  // Null when checkpoints are disabled.
  std::optional<train::FoundCheckpoint> resume;   // What --resume chose, if anything.
  std::string run_id;  // The resumed checkpoint's run id, else a new one.
};

// Rank 0, during start-up: with --resume, picks the checkpoint: "auto" the newest good
// one in <out>/checkpoints of a run this one can continue (same config but for
// training.epochs and the like, same rank count; each one passed over is reported with a
// warning). No checkpoint at all starts the run from scratch; checkpoints of which none
// can be continued are an InputError naming each file and why. A given file must verify
// and fit. Then opens <out>/checkpoints for the run (InputError if it cannot be written).
CheckpointSetup PrepareCheckpoints(const Flags& f, const v1::ExperimentConfig& config,
                                   const std::filesystem::path& out, int world_size);

// The command line that continues this run from its newest checkpoint: argv (from
// `epochal train` on) without --out, --resume, --overwrite and --stop-after-steps, then
// `--out <out> --resume auto`, each word quoted for a POSIX shell where it needs it.
std::string ResumeCommand(const Flags& f, int argc, char** argv, const std::string& out);

}  // namespace epochal::apps
