// The Evaluator alone (what `epochal evaluate` uses) and against the Trainer that owns
// one: saved weights give the trainer's figures exactly, the gap terms add up, the
// aligned loss is the mean over the half epochs around a boundary.
#include "epochal/train/evaluator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

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

TEST(EvaluatorTest, FourGapTermsAddUpAndNameTheDominantOne) {
  EpochRecord record;
  record.loss = 0.50;
  record.val_loss = 0.40;
  ProbeLosses p;
  p.train = 0.45;
  p.nodrop = 0.33;
  p.eval = 0.30;
  p.train_se = 0.004;
  p.eval_se = 0.003;
  p.dropout_se = 0.002;
  p.batchnorm_se = 0.001;
  p.regularization_se = 0.0025;
  EvalResult val;
  val.loss = 0.40;
  val.loss_se = 0.004;
  p.eval_result.confusion = {3, 1, 0, 4};
  p.eval_result.class_loss = {0.2, 0.4};
  Evaluator::SetGapTerms(p, val, &record);
  EXPECT_DOUBLE_EQ(*record.gap_timing, 0.45 - 0.50);
  EXPECT_DOUBLE_EQ(*record.gap_dropout, 0.33 - 0.45);
  EXPECT_DOUBLE_EQ(*record.gap_batchnorm, 0.30 - 0.33);
  EXPECT_DOUBLE_EQ(*record.gap_regularization, 0.30 - 0.45);
  EXPECT_DOUBLE_EQ(*record.gap_data, 0.40 - 0.30);
  EXPECT_NEAR(*record.gap_timing + *record.gap_dropout + *record.gap_batchnorm + *record.gap_data,
              record.val_loss - record.loss, 1e-12);
  EXPECT_DOUBLE_EQ(*record.gap_timing_se, 0.004);
  EXPECT_DOUBLE_EQ(*record.gap_dropout_se, 0.002);
  EXPECT_DOUBLE_EQ(*record.gap_batchnorm_se, 0.001);
  EXPECT_DOUBLE_EQ(*record.gap_regularization_se, 0.0025);
  EXPECT_DOUBLE_EQ(*record.gap_data_se, 0.005);  // Independent samples: sqrt(4^2 + 3^2).
  EXPECT_EQ(record.dominant_term, "dropout");
  EXPECT_EQ(record.probe_class_accuracy, (std::vector<double>{0.75, 1.0}));
}

// The model decides which passes run: without dropout layers P_nodrop is P_train less
// the penalty, exactly, and without batch norm P_eval is P_nodrop, exactly; the terms
// then are exactly 0 (or the penalty) with no uncertainty.
TEST(EvaluatorTest, TermsTheModelCannotHaveAreExactlyZero) {
  EPOCHAL_REQUIRE_FASHION_MNIST();
  v1::ExperimentConfig config = SmallNet();
  // No dropout, no batch norm, no L2.
  auto* layers = config.mutable_model()->mutable_layers();
  layers->erase(
      std::remove_if(layers->begin(), layers->end(),
                     [](const v1::LayerSpec& l) { return l.has_dropout() || l.has_batch_norm(); }),
      layers->end());
  config.mutable_optimizer()->set_weight_decay(0);
  const data::Dataset train = LoadFashionMnist(true, 640), val = LoadFashionMnist(false, 200);
  const dist::Communicator solo = dist::Communicator::Solo();
  nn::Model model(config.model(), 32, config.training().seed());
  Evaluator evaluator(config, model, solo, &train, 32);
  EXPECT_EQ(evaluator.traits().AbsentTerms(), (std::vector<std::string>{"dropout", "batchnorm"}));
  EpochRecord record;
  record.epoch = 1;
  record.loss = 2.0;
  evaluator.MeasureEpoch(val, &record);
  ASSERT_TRUE(record.gap_dropout && record.gap_batchnorm);
  EXPECT_EQ(*record.gap_dropout, 0.0);
  EXPECT_EQ(*record.gap_batchnorm, 0.0);
  EXPECT_EQ(*record.gap_dropout_se, 0.0);
  EXPECT_EQ(*record.gap_batchnorm_se, 0.0);
  EXPECT_GT(*record.gap_timing_se, 0.0);
  EXPECT_GT(*record.gap_data_se, 0.0);
}

// Precise batch norm: after recomputing, the running statistics are the mean of the
// batch statistics of the chosen batches, whatever they held before.
TEST(EvaluatorTest, RecomputedBatchNormStatisticsForgetTheirStart) {
  EPOCHAL_REQUIRE_FASHION_MNIST();
  const v1::ExperimentConfig config = SmallNet();
  const data::Dataset train = LoadFashionMnist(true, 640);
  const dist::Communicator solo = dist::Communicator::Solo();
  nn::Model a(config.model(), 32, config.training().seed());
  nn::Model b(config.model(), 32, config.training().seed());
  // b starts from absurd running statistics; a from the initial ones.
  for (nn::StateBuffer* s : b.state()) std::fill(s->value.begin(), s->value.end(), 123.0f);
  Evaluator ea(config, a, solo, &train, 32), eb(config, b, solo, &train, 32);
  ea.RecomputeBatchNormStatistics(8, 1);
  eb.RecomputeBatchNormStatistics(8, 1);
  const auto sa = a.state(), sb = b.state();
  ASSERT_EQ(sa.size(), sb.size());
  ASSERT_FALSE(sa.empty());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i]->value, sb[i]->value) << sa[i]->name;
    for (float v : sa[i]->value) EXPECT_LT(std::abs(v), 50.0f) << sa[i]->name;
  }
}

TEST(EvaluatorTest, AlignedLossIsTheMeanOverHalfAnEpochOnEachSide) {
  History h;
  h.epochs.resize(2);
  // Four batches per epoch: the boundary at 1 takes the batches in (0.5, 1.5].
  for (int i = 1; i <= 8; ++i) h.batches.push_back({i * 0.25, static_cast<double>(i), 0.1});
  Evaluator::SetAlignedLoss(1, &h);
  ASSERT_TRUE(h.epochs[0].aligned_train_loss);
  EXPECT_DOUBLE_EQ(*h.epochs[0].aligned_train_loss, (3 + 4 + 5 + 6) / 4.0);
  // With sample counts, batches weigh by them: a last batch of 2 samples counts 2/32.
  for (auto& b : h.batches) b.samples = 32;
  h.batches[3].samples = 2;  // ends epoch 1
  h.epochs[0].aligned_train_loss.reset();
  Evaluator::SetAlignedLoss(1, &h);
  EXPECT_DOUBLE_EQ(*h.epochs[0].aligned_train_loss,
                   (3 * 32 + 4 * 2 + 5 * 32 + 6 * 32) / (32.0 * 3 + 2));
  Evaluator::SetAlignedLoss(3, &h);  // No such epoch: nothing happens.
  EXPECT_FALSE(h.epochs[1].aligned_train_loss);
}

}  // namespace
}  // namespace epochal::train
