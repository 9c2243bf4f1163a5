// The run's state and its checkpoint, in one process: SnapshotState and RestoreState are
// inverses; a run stopped mid-epoch by a stop control word and continued by a fresh
// Trainer from the stop checkpoint ends with the same state digest and history as an
// uninterrupted run; a diverging run names the step and leaves only finite checkpoints
// behind.
#include "epochal/train/training_state.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "../report/temp_dir.h"
#include "epochal/core/error.h"
#include "epochal/train/checkpoint.h"
#include "epochal/train/config.h"
#include "epochal/train/trainer.h"

namespace epochal::train {
namespace {

namespace fs = std::filesystem;
constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist";

#define REQUIRE_FASHION_MNIST()                                           \
  if (!fs::exists(std::string(kDataDir) + "/train-images-idx3-ubyte.gz")) \
  GTEST_SKIP() << "dataset-fashion-mnist is not installed"

using ::epochal::report::testing::TempDir;

data::Dataset Load(bool train, int64_t limit) {
  const std::string d = kDataDir;
  return data::LoadIdxDataset(
      d + (train ? "/train-images-idx3-ubyte.gz" : "/t10k-images-idx3-ubyte.gz"),
      d + (train ? "/train-labels-idx1-ubyte.gz" : "/t10k-labels-idx1-ubyte.gz"), 10, limit);
}

v1::ExperimentConfig Config() {
  v1::ExperimentConfig config = LoadExperimentConfig(std::string(EPOCHAL_SOURCE_DIR) +
                                                     "/configs/fashion_mnist_minivggnet.textproto");
  config.mutable_training()->set_epochs(2);
  config.mutable_analysis()->set_probe_samples(64);
  config.mutable_checkpoint()->set_every_steps(3);
  return config;
}

std::string FinalDigest(const fs::path& dir) {
  auto found = FindLatestCheckpoint(dir, {});
  EXPECT_TRUE(found);
  return found ? StateDigest(found->checkpoint) : "";
}

TEST(TrainingStateTest, StopThenRestoreContinuesBitwiseIdentically) {
  REQUIRE_FASHION_MNIST();
  const data::Dataset train = Load(true, 256), val = Load(false, 64);
  const v1::ExperimentConfig config = Config();  // 8 steps per epoch at batch 32.
  TempDir a, b;
  History reference;
  {
    CheckpointStore store(a.path(), {3, true, ""});
    Trainer trainer(config, train, val);
    trainer.EnableCheckpoints(&store);
    reference = trainer.Run();
  }
  {
    CheckpointStore store(b.path(), {3, true, ""});
    Trainer trainer(config, train, val);
    trainer.EnableCheckpoints(&store);
    StopAtStep stop(5);  // Mid-epoch 1, not a multiple of 3.
    trainer.SetControlSource(&stop);
    trainer.Run();
    EXPECT_EQ(trainer.global_step(), 5);
  }
  const v1::Checkpoint at_stop = ReadCheckpointFile(b.path() / "ckpt-0000000005-a.epck");
  EXPECT_EQ(at_stop.reason(), "stop");
  History resumed;
  {
    CheckpointStore store(b.path(), {3, true, ""});
    Trainer trainer(config, train, val);
    trainer.EnableCheckpoints(&store);
    ASSERT_TRUE(trainer.Restore(&at_stop));
    resumed = trainer.Run();
  }
  EXPECT_EQ(FinalDigest(b.path()), FinalDigest(a.path()));
  ASSERT_EQ(resumed.epochs.size(), reference.epochs.size());
  ASSERT_EQ(resumed.batches.size(), reference.batches.size());
  for (size_t i = 0; i < reference.batches.size(); ++i) {
    EXPECT_EQ(resumed.batches[i].loss, reference.batches[i].loss) << i;
    EXPECT_EQ(resumed.batches[i].lr, reference.batches[i].lr) << i;
  }
  for (size_t e = 0; e < reference.epochs.size(); ++e) {
    EXPECT_EQ(resumed.epochs[e].loss, reference.epochs[e].loss);
    EXPECT_EQ(resumed.epochs[e].val_loss, reference.epochs[e].val_loss);
    EXPECT_EQ(resumed.epochs[e].probe_train_loss, reference.epochs[e].probe_train_loss);
    EXPECT_EQ(resumed.epochs[e].aligned_train_loss, reference.epochs[e].aligned_train_loss);
    EXPECT_EQ(resumed.epochs[e].findings, reference.epochs[e].findings);
  }
}

TEST(TrainingStateTest, DivergenceNamesTheStepAndKeepsOnlyFiniteCheckpoints) {
  REQUIRE_FASHION_MNIST();
  const data::Dataset train = Load(true, 256), val = Load(false, 64);
  v1::ExperimentConfig config = Config();
  config.mutable_optimizer()->set_learning_rate(1e12f);
  config.mutable_checkpoint()->set_every_steps(1);
  TempDir dir;
  CheckpointStore store(dir.path(), {100, false, ""});
  Trainer trainer(config, train, val);
  trainer.EnableCheckpoints(&store);
  try {
    trainer.Run();
    FAIL() << "a learning rate of 1e12 should diverge";
  } catch (const Error& e) {
    // Either the step's loss or gradient is caught, or (if the weights overflowed
    // while the loss was still finite) the checkpoint of that step is refused.
    const std::string what = e.what();
    const bool diverged = what.find("training diverged at epoch 1") != std::string::npos;
    const bool refused = what.find("refusing to write a checkpoint") != std::string::npos;
    EXPECT_TRUE(diverged || refused) << what;
    EXPECT_NE(
        what.find("global step " + std::to_string(trainer.global_step() + (diverged ? 1 : 0))),
        std::string::npos)
        << what;
  }
  // Every checkpoint written holds finite values only.
  for (const fs::path& p : store.List()) {
    const v1::Checkpoint c = ReadCheckpointFile(p);
    EXPECT_LE(c.position().global_step(), trainer.global_step());
    for (const auto& t : c.weights().tensors()) {
      for (float v : t.values()) ASSERT_TRUE(std::isfinite(v)) << p << " " << t.name();
    }
  }
}

TEST(TrainingStateTest, SnapshotThenRestoreGivesTheSameStateAndDigest) {
  REQUIRE_FASHION_MNIST();
  const data::Dataset train = Load(true, 128), val = Load(false, 64);
  v1::ExperimentConfig config = Config();
  config.mutable_training()->set_epochs(1);
  Trainer trainer(config, train, val);
  trainer.Run();
  RunState state;
  state.epoch = 2;
  state.batches_done = 1;
  state.global_step = trainer.global_step();
  state.sums = {12.5, 7, 32, 1, 0.01};
  state.history = trainer.history();
  const dist::Communicator solo = dist::Communicator::Solo();
  const v1::Checkpoint c =
      SnapshotState(config, solo, trainer.model(), trainer.optimizer(), state, 4, "steps");
  EXPECT_EQ(c.reason(), "steps");
  EXPECT_EQ(c.position().batches_per_epoch(), 4);

  Trainer fresh(config, train, val);
  RunState restored;
  restored.history.config_json = "{}";
  RestoreState(c, solo, fresh.model(), fresh.optimizer(), 4, &restored);
  EXPECT_EQ(restored.epoch, 2);
  EXPECT_EQ(restored.batches_done, 1);
  EXPECT_EQ(restored.global_step, state.global_step);
  EXPECT_EQ(restored.sums.loss_sum, 12.5);
  EXPECT_EQ(restored.sums.seen, 32);
  EXPECT_EQ(restored.history.config_json, "{}");  // Kept: not part of the checkpoint.
  EXPECT_EQ(restored.history.epochs.size(), state.history.epochs.size());
  EXPECT_EQ(restored.history.batches.size(), state.history.batches.size());
  EXPECT_EQ(fresh.evaluator().WeightsHash(), trainer.evaluator().WeightsHash());
  EXPECT_EQ(fresh.optimizer().iterations(), trainer.optimizer().iterations());
  EXPECT_EQ(StateDigest(SnapshotState(config, solo, fresh.model(), fresh.optimizer(), restored, 4,
                                      "steps")),
            c.state_sha256());
  // Another epoch length is refused with both lengths named.
  try {
    RestoreState(c, solo, fresh.model(), fresh.optimizer(), 5, &restored);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4 batches, this run's have 5"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace epochal::train
