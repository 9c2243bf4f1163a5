#include "checkpoint_flags.h"

#include <iostream>
#include <limits>

#include "epochal/core/error.h"
#include "epochal/core/logging.h"

namespace epochal::apps {

namespace fs = std::filesystem;

void AddCheckpointFlags(Flags& f) {
  f.Value("resume", "auto|FILE",
          "continue from a checkpoint: auto = the newest good one in <out>/checkpoints "
          "(none: start fresh)");
  f.Value("checkpoint-every-steps", "N", "also checkpoint every N global steps",
          "config's checkpoint.every_steps, else only after epochs");
  f.Value("keep-checkpoints", "N", "keep the newest N checkpoints (plus best.epck)",
          "config's checkpoint.keep_last, else 3");
  f.Switch("no-checkpoints", "write no checkpoints");
}

void ApplyCheckpointFlags(const Flags& f, v1::ExperimentConfig* config) {
  auto* c = config->mutable_checkpoint();
  if (auto v = f.GetInt("checkpoint-every-steps", 0)) c->set_every_steps(*v);
  constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
  if (auto v = f.GetInt("keep-checkpoints", 1, kMaxInt32)) {
    c->set_keep_last(static_cast<int32_t>(*v));
  }
  if (f.Has("no-checkpoints")) c->set_disabled(true);
}

CheckpointSetup PrepareCheckpoints(const Flags& f, const v1::ExperimentConfig& config,
                                   const fs::path& out, int world_size) {
  CheckpointSetup setup;
  const fs::path dir = out / "checkpoints";
  const auto& c = config.checkpoint();
  if (!c.disabled()) {
    train::CheckpointStoreOptions options;
    options.keep_last = c.has_keep_last() ? c.keep_last() : 3;
    options.keep_best = c.has_keep_best() ? c.keep_best() : true;
    setup.store = std::make_unique<train::CheckpointStore>(dir, options);
  }
  const auto resume = f.Get("resume");
  if (!resume) return setup;
  if (*resume == "auto") {
    setup.resume = train::FindLatestCheckpoint(
        dir, [](const std::string& warning) { EPOCHAL_LOG(kWarning, warning); });
    if (!setup.resume) {
      std::cout << "epochal: --resume auto: no good checkpoint in " << dir.string()
                << ", starting from the beginning\n";
      return setup;
    }
  } else {
    try {
      setup.resume = train::FoundCheckpoint{*resume, train::ReadCheckpointFile(*resume)};
    } catch (const train::CheckpointError& e) {
      throw InputError(std::string("--resume: ") + e.what());
    }
  }
  const v1::Checkpoint& ckpt = setup.resume->checkpoint;
  const std::string name = setup.resume->path.string();
  train::CheckResumeCompatible(ckpt.config(), config, name);
  if (ckpt.world_size() != world_size) {
    throw InputError(name + ": written by a run of " + std::to_string(ckpt.world_size()) +
                     " ranks, this one has " + std::to_string(world_size) +
                     "; resume with the same rank count for an exact continuation");
  }
  std::cout << "epochal: resuming from " << name << " (" << ckpt.reason() << ", epoch "
            << ckpt.position().epoch() << ", batch " << ckpt.position().batches_done()
            << ", global step " << ckpt.position().global_step() << ")\n";
  return setup;
}

}  // namespace epochal::apps
