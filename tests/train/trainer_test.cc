#include "epochal/train/trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <numeric>

#include "epochal/core/error.h"
#include "epochal/nn/precision.h"
#include "epochal/train/config.h"
#include "epochal/train/weights_io.h"

namespace epochal::train {
namespace {

constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist";

v1::ExperimentConfig MiniVgg() {
  return LoadExperimentConfig(std::string(EPOCHAL_SOURCE_DIR) +
                              "/configs/fashion_mnist_minivggnet.textproto");
}

bool HaveFashionMnist() {
  return std::filesystem::exists(std::string(kDataDir) + "/train-images-idx3-ubyte.gz");
}

data::Dataset Load(bool train, int64_t limit) {
  const std::string d = kDataDir;
  return data::LoadIdxDataset(
      d + (train ? "/train-images-idx3-ubyte.gz" : "/t10k-images-idx3-ubyte.gz"),
      d + (train ? "/train-labels-idx1-ubyte.gz" : "/t10k-labels-idx1-ubyte.gz"), 10, limit);
}

#define REQUIRE_FASHION_MNIST() \
  if (!HaveFashionMnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed"

class CountingObserver : public TrainingObserver {
 public:
  void OnEpochStart(int, int, int64_t) override { ++epochs_started; }
  void OnStep(const StepEvent& e) override {
    ++steps;
    last = e;
  }
  void OnEpochEnd(const EpochRecord&, const EvalResult&, const History&) override {
    ++epochs_ended;
  }
  void OnTrainingEnd(const History&, const EvalResult&) override { ++ended; }
  int epochs_started = 0, epochs_ended = 0, steps = 0, ended = 0;
  StepEvent last;
};

TEST(TrainerTest, LearnsOnTwoThousandRealSamples) {
  REQUIRE_FASHION_MNIST();
  v1::ExperimentConfig config = MiniVgg();
  config.mutable_training()->set_epochs(3);
  const data::Dataset train = Load(true, 2000), val = Load(false, 1000);
  Trainer trainer(config, train, val);
  const History& h = trainer.Run();
  ASSERT_EQ(h.epochs.size(), 3u);
  EXPECT_LT(h.epochs[2].loss, h.epochs[0].loss);
  EXPECT_LT(h.epochs[2].loss, 0.9);
  // Chance is 10%.
  EXPECT_GT(h.epochs[2].val_accuracy, 0.5);
  EXPECT_GT(h.epochs[2].accuracy, h.epochs[0].accuracy);
}

#define REQUIRE_NATIVE_BF16()                                                            \
  if (!nn::DispatchedIsaHasBf16())                                                       \
  GTEST_SKIP() << "oneDNN dispatches " << nn::DispatchedIsaName() << " here: no native " \
               << "bf16 (AVX512-BF16 or AMX), so the bf16 path is not available"

// The whole model in bf16 mixed precision, validation and probes included.
TEST(TrainerTest, LearnsOnTwoThousandRealSamplesInBf16) {
  REQUIRE_FASHION_MNIST();
  REQUIRE_NATIVE_BF16();
  v1::ExperimentConfig config = MiniVgg();
  config.mutable_training()->set_epochs(3);
  config.mutable_training()->set_precision("bf16");
  const data::Dataset train = Load(true, 2000), val = Load(false, 1000);
  Trainer trainer(config, train, val);
  EXPECT_EQ(trainer.model().precision(), nn::Precision::kBf16);
  const History& h = trainer.Run();
  ASSERT_EQ(h.epochs.size(), 3u);
  EXPECT_LT(h.epochs[2].loss, h.epochs[0].loss);
  EXPECT_LT(h.epochs[2].loss, 0.9);
  EXPECT_GT(h.epochs[2].accuracy, h.epochs[0].accuracy);
  // The training-mode probe (batch statistics) improves as the running loss does.
  ASSERT_TRUE(h.epochs[0].probe_train_loss && h.epochs[2].probe_train_loss);
  EXPECT_LT(*h.epochs[2].probe_train_loss, *h.epochs[0].probe_train_loss);
  // Validation uses the running statistics, which lag far behind at 63 steps an epoch
  // with momentum 0.99: f32 itself measured 0.57, 0.24 and 0.51 over these epochs and
  // bf16 0.38, 0.35 and 0.43, so only "well above chance (0.1)" is a property.
  EXPECT_GT(h.epochs[2].val_accuracy, 0.3);
  // Master weights stay f32.
  for (nn::Parameter* p : trainer.model().parameters()) {
    EXPECT_EQ(p->value.get_desc().data_type(), nn::dt::f32) << p->name;
  }
}

TEST(TrainerTest, SameSeedGivesBitwiseIdenticalRunsInBf16) {
  REQUIRE_FASHION_MNIST();
  REQUIRE_NATIVE_BF16();
  v1::ExperimentConfig config = MiniVgg();
  config.mutable_training()->set_epochs(1);
  config.mutable_training()->set_precision("bf16");
  const data::Dataset train = Load(true, 256), val = Load(false, 64);
  Trainer a(config, train, val), b(config, train, val);
  const History& ha = a.Run();
  const History& hb = b.Run();
  ASSERT_EQ(ha.batches.size(), hb.batches.size());
  for (size_t i = 0; i < ha.batches.size(); ++i) EXPECT_EQ(ha.batches[i].loss, hb.batches[i].loss);
  EXPECT_EQ(ha.epochs[0].val_loss, hb.epochs[0].val_loss);
  for (size_t i = 0; i < a.model().parameters().size(); ++i) {
    EXPECT_EQ(nn::ToPlain(a.model().dnnl(), a.model().parameters()[i]->value),
              nn::ToPlain(b.model().dnnl(), b.model().parameters()[i]->value));
  }
}

TEST(TrainerTest, HistoryFollowsTheStepsAndTheKerasSchedule) {
  REQUIRE_FASHION_MNIST();
  v1::ExperimentConfig config = MiniVgg();
  config.mutable_training()->set_epochs(2);
  config.mutable_training()->set_batch_size(50);
  const data::Dataset train = Load(true, 230), val = Load(false, 70);
  Trainer trainer(config, train, val);
  CountingObserver counter;
  trainer.AddObserver(&counter);
  const History& h = trainer.Run();
  // 230 samples in batches of 50: 4 full batches and one of 30 per epoch.
  ASSERT_EQ(h.batches.size(), 10u);
  EXPECT_EQ(counter.steps, 10);
  EXPECT_EQ(counter.epochs_started, 2);
  EXPECT_EQ(counter.epochs_ended, 2);
  EXPECT_EQ(counter.ended, 1);
  EXPECT_DOUBLE_EQ(h.batches[4].epoch_progress, 1.0);
  EXPECT_DOUBLE_EQ(h.batches[9].epoch_progress, 2.0);
  EXPECT_NEAR(h.batches[0].epoch_progress, 50.0 / 230.0, 1e-12);
  for (size_t t = 0; t < h.batches.size(); ++t) {
    EXPECT_NEAR(h.batches[t].lr, 0.01 / (1.0 + 0.0004 * static_cast<double>(t)), 1e-8);
  }
  // The epoch loss is the sample-weighted mean of its batch losses.
  const double expected =
      (50 * (h.batches[0].loss + h.batches[1].loss + h.batches[2].loss + h.batches[3].loss) +
       30 * h.batches[4].loss) /
      230;
  EXPECT_NEAR(h.epochs[0].loss, expected, 1e-9);
  EXPECT_EQ(h.epochs[1].lr, h.batches[9].lr);
  EXPECT_GT(h.epochs[0].seconds, 0);
  EXPECT_GT(h.epochs[0].images_per_second, 0);
  EXPECT_NE(h.config_json.find("\"learning_rate\""), std::string::npos);
}

TEST(TrainerTest, SameSeedGivesBitwiseIdenticalRuns) {
  REQUIRE_FASHION_MNIST();
  v1::ExperimentConfig config = MiniVgg();
  config.mutable_training()->set_epochs(1);
  const data::Dataset train = Load(true, 256), val = Load(false, 64);
  Trainer a(config, train, val), b(config, train, val);
  const History& ha = a.Run();
  const History& hb = b.Run();
  ASSERT_EQ(ha.batches.size(), hb.batches.size());
  for (size_t i = 0; i < ha.batches.size(); ++i) EXPECT_EQ(ha.batches[i].loss, hb.batches[i].loss);
  EXPECT_EQ(ha.epochs[0].val_loss, hb.epochs[0].val_loss);
  for (size_t i = 0; i < a.model().parameters().size(); ++i) {
    EXPECT_EQ(nn::ToPlain(a.model().dnnl(), a.model().parameters()[i]->value),
              nn::ToPlain(b.model().dnnl(), b.model().parameters()[i]->value));
  }
  // Another seed: another shuffle, other masks, other weights.
  config.mutable_training()->set_seed(7);
  Trainer c(config, train, val);
  EXPECT_NE(c.Run().batches[0].loss, ha.batches[0].loss);
}

TEST(TrainerTest, SavedWeightsEvaluateIdentically) {
  REQUIRE_FASHION_MNIST();
  v1::ExperimentConfig config = MiniVgg();
  config.mutable_training()->set_epochs(1);
  const data::Dataset train = Load(true, 320), val = Load(false, 200);
  Trainer trainer(config, train, val);
  trainer.Run();
  const EvalResult before = trainer.evaluator().Evaluate(val);
  const std::string path = ::testing::TempDir() + "/epochal_weights_test.pb";
  SaveWeights(trainer.model(), "test", 1, path);
  config.mutable_training()->set_seed(99);  // Different initial weights, then loaded.
  Trainer fresh(config, train, val);
  EXPECT_NE(fresh.evaluator().Evaluate(val).loss, before.loss);
  LoadWeights(fresh.model(), path);
  const EvalResult after = fresh.evaluator().Evaluate(val);
  EXPECT_EQ(after.loss, before.loss);
  EXPECT_EQ(after.confusion, before.confusion);
  EXPECT_EQ(std::accumulate(after.confusion.begin(), after.confusion.end(), int64_t{0}), 200);
  std::filesystem::remove(path);
}

TEST(TrainerTest, WeightsForAnotherModelAreRejectedByName) {
  REQUIRE_FASHION_MNIST();
  v1::ExperimentConfig config = MiniVgg();
  const data::Dataset train = Load(true, 64), val = Load(false, 64);
  Trainer trainer(config, train, val);
  const std::string path = ::testing::TempDir() + "/epochal_weights_other.pb";
  SaveWeights(trainer.model(), "test", 0, path);
  config.mutable_model()->mutable_layers(17)->mutable_dense()->set_units(256);  // fc1
  Trainer other(config, train, val);
  try {
    LoadWeights(other.model(), path);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("fc1/kernel"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

TEST(TrainerTest, DivergingLossStopsWithTheStep) {
  REQUIRE_FASHION_MNIST();
  v1::ExperimentConfig config = MiniVgg();
  config.mutable_optimizer()->set_learning_rate(1e12f);
  config.mutable_training()->set_epochs(1);
  const data::Dataset train = Load(true, 640), val = Load(false, 64);
  Trainer trainer(config, train, val);
  try {
    trainer.Run();
    FAIL() << "a learning rate of 1e12 should make the loss non-finite";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step"), std::string::npos) << e.what();
  }
}

TEST(TrainerTest, DatasetOfTheWrongShapeIsRejected) {
  v1::ExperimentConfig config = MiniVgg();
  data::Dataset odd;
  odd.name = "odd";
  odd.channels = 1;
  odd.height = 32;
  odd.width = 32;
  odd.num_classes = 10;
  odd.pixels.assign(32 * 32, 0);
  odd.labels.assign(1, 0);
  EXPECT_THROW(Trainer(config, odd, odd), InputError);
}

}  // namespace
}  // namespace epochal::train
