// The Evaluator alone (what `epochal evaluate` uses) and against the Trainer that owns
// one: saved weights give the trainer's figures exactly, the gap terms add up, the
// aligned loss is the mean over the half epochs around a boundary.
#include "epochal/train/evaluator.h"

#include <gtest/gtest.h>

#include "../report/temp_dir.h"
#include "epochal/train/config.h"
#include "epochal/train/trainer.h"
#include "epochal/train/weights_io.h"
#include "fashion_mnist.h"

namespace epochal::train {
namespace {

using testing::LoadFashionMnist;

v1::ExperimentConfig SmallNet() {
  return ParseExperimentConfig(R"pb(
                                 name: "small"
                                 model {
                                   input { channels: 1 height: 28 width: 28 }
                                   num_classes: 10
                                   layers { conv { filters: 8 kernel: 3 padding: "same" } }
                                   layers { relu {} }
                                   layers { batch_norm {} }
                                   layers { max_pool { pool: 2 } }
                                   layers { flatten {} }
                                   layers { dropout { rate: 0.25 } }
                                   layers { dense { units: 10 } }
                                   layers { softmax_cross_entropy {} }
                                 }
                                 optimizer { learning_rate: 0.01 momentum: 0.9 weight_decay: 0.001 }
                                 training { batch_size: 32 seed: 5 epochs: 1 }
                                 analysis { probe_samples: 256 })pb",
                               "evaluator_test");
}

TEST(EvaluatorTest, SavedWeightsGiveTheTrainersFiguresWithoutATrainer) {
  EPOCHAL_REQUIRE_FASHION_MNIST();
  const v1::ExperimentConfig config = SmallNet();
  const data::Dataset train = LoadFashionMnist(true, 640), val = LoadFashionMnist(false, 200);
  Trainer trainer(config, train, val);
  const History& h = trainer.Run();
  ASSERT_EQ(h.epochs.size(), 1u);
  report::testing::TempDir dir;
  const std::string path = (dir.path() / "weights.pb").string();
  SaveWeights(trainer.model(), "small", 1, path);

  const dist::Communicator solo = dist::Communicator::Solo();
  const BatchSplit batch = SplitBatch(config.training(), 1);
  nn::Model model(config.model(), batch.per_rank, config.training().seed());
  LoadWeights(model, path);
  Evaluator evaluator(config, model, solo, &train, batch.per_rank);
  EXPECT_EQ(evaluator.probe_indices(), trainer.evaluator().probe_indices());
  const EvalResult v = evaluator.Evaluate(val);
  EXPECT_EQ(v.loss, h.epochs[0].val_loss);
  EXPECT_EQ(v.accuracy, h.epochs[0].val_accuracy);
  const ProbeLosses p = evaluator.MeasureProbes();
  EXPECT_EQ(p.train, *h.epochs[0].probe_train_loss);
  EXPECT_EQ(p.eval, *h.epochs[0].probe_eval_loss);
  EXPECT_EQ(evaluator.WeightsHash(), trainer.evaluator().WeightsHash());
  EXPECT_EQ(evaluator.ReplicaHashes(), std::vector<std::string>{evaluator.WeightsHash()});
}

TEST(EvaluatorTest, WithoutAProbeSourceThereAreNoProbes) {
  EPOCHAL_REQUIRE_FASHION_MNIST();
  const v1::ExperimentConfig config = SmallNet();
  const data::Dataset val = LoadFashionMnist(false, 100);
  const dist::Communicator solo = dist::Communicator::Solo();
  nn::Model model(config.model(), 32, config.training().seed());
  Evaluator evaluator(config, model, solo, nullptr, 32);
  EXPECT_TRUE(evaluator.probe_indices().empty());
  const ProbeLosses p = evaluator.MeasureProbes();
  EXPECT_EQ(p.train, 0.0);
  EXPECT_EQ(p.eval, 0.0);
  EpochRecord record;
  record.epoch = 1;
  const EvalResult v = evaluator.MeasureEpoch(val, &record);
  EXPECT_EQ(v.count, 100);
  EXPECT_EQ(record.val_loss, v.loss);
  EXPECT_EQ(record.val_class_loss.size(), 10u);
  EXPECT_FALSE(record.gap_timing);
  EXPECT_TRUE(record.replica_hashes.empty());  // One rank: nothing to compare.
}

TEST(EvaluatorTest, GapTermsAddUpAndNameTheDominantOne) {
  EpochRecord record;
  record.loss = 0.50;
  record.val_loss = 0.40;
  ProbeLosses p;
  p.train = 0.45;
  p.eval = 0.30;
  p.eval_result.confusion = {3, 1, 0, 4};
  p.eval_result.class_loss = {0.2, 0.4};
  Evaluator::SetGapTerms(p, &record);
  EXPECT_DOUBLE_EQ(*record.gap_timing, 0.45 - 0.50);
  EXPECT_DOUBLE_EQ(*record.gap_regularization, 0.30 - 0.45);
  EXPECT_DOUBLE_EQ(*record.gap_data, 0.40 - 0.30);
  EXPECT_NEAR(*record.gap_timing + *record.gap_regularization + *record.gap_data,
              record.val_loss - record.loss, 1e-12);
  EXPECT_EQ(record.dominant_term, "regularization");
  EXPECT_EQ(record.probe_class_accuracy, (std::vector<double>{0.75, 1.0}));
}

TEST(EvaluatorTest, AlignedLossIsTheMeanOverHalfAnEpochOnEachSide) {
  History h;
  h.epochs.resize(2);
  // Four batches per epoch: the boundary at 1 takes the batches in (0.5, 1.5].
  for (int i = 1; i <= 8; ++i) h.batches.push_back({i * 0.25, static_cast<double>(i), 0.1});
  Evaluator::SetAlignedLoss(1, &h);
  ASSERT_TRUE(h.epochs[0].aligned_train_loss);
  EXPECT_DOUBLE_EQ(*h.epochs[0].aligned_train_loss, (3 + 4 + 5 + 6) / 4.0);
  Evaluator::SetAlignedLoss(3, &h);  // No such epoch: nothing happens.
  EXPECT_FALSE(h.epochs[1].aligned_train_loss);
}

}  // namespace
}  // namespace epochal::train
