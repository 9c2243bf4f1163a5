// The loss-gap diagnosis on real data: small runs of the real binary on Fashion-MNIST
// subsets built so that one mechanism dominates, each of which must raise its finding.
//
//   - validation made partly of copies of training samples      -> LEAKAGE
//   - the same subsets without copies                           -> no LEAKAGE
//   - dropout 0.7 in every dropout layer                        -> REGULARIZATION dominant
//   - validation restricted to trouser, sandal and bag          -> VALIDATION_EASIER
//   - no dropout, 256 training samples, 20 epochs               -> OVERFITTING
//   - dropout 0.7 everywhere, with and without L2               -> OVER_REGULARIZED
//   - 1,000 training samples, no dropout, 1 epoch               -> BATCHNORM_LAG, which
//     --recompute-bn-stats removes
//   - the reference config on clean subsets                     -> none of LEAKAGE,
//     VALIDATION_EASIER, OVER_REGULARIZED, OVERFITTING
//   - a run stopped part-way through an epoch                   -> a partial epoch, not
//     diagnosed
//
// Every run's every epoch must satisfy the four-term identity to 1e-6.
// Each scenario writes its subsets as IDX files into a temporary data directory, writes
// the reference config with the scenario's edits next to them, runs `epochal train` and
// reads history.json and diagnosis.json back.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "epochal/data/idx.h"
#include "epochal/report/history_reader.h"
#include "gtest/gtest.h"
#include "process_util.h"

namespace epochal {
namespace {

namespace fs = std::filesystem;
using ::epochal::test::Contains;
using ::epochal::test::Outcome;
using ::epochal::test::ReadFile;
using ::epochal::test::RunWithTimeout;
using ::epochal::test::TempDir;

constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist";
constexpr int64_t kPixels = 28 * 28;
// Fashion-MNIST label ids.
constexpr uint8_t kTrouser = 1, kSandal = 5, kBag = 8;

struct Split {
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> labels;
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  void Append(const Split& from, int64_t i) {
    const auto first = from.pixels.begin() + static_cast<std::ptrdiff_t>(i * kPixels);
    pixels.insert(pixels.end(), first, first + kPixels);
    labels.push_back(from.labels[static_cast<size_t>(i)]);
  }
};

Split Load(const std::string& images, const std::string& labels) {
  const data::IdxArray x = data::ReadIdx(std::string(kDataDir) + "/" + images, 3);
  const data::IdxArray y = data::ReadIdx(std::string(kDataDir) + "/" + labels, 1);
  return Split{x.data, y.data};
}

// The real splits, read once for all scenarios.
const Split& RealTrain() {
  static const Split split = Load("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz");
  return split;
}
const Split& RealTest() {
  static const Split split = Load("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz");
  return split;
}

Split First(const Split& from, int64_t n) {
  Split out;
  for (int64_t i = 0; i < n; ++i) out.Append(from, i);
  return out;
}

void WriteSplit(const Split& split, const fs::path& images, const fs::path& labels) {
  data::IdxArray x{data::kIdxUByte, {split.size(), 28, 28}, split.pixels};
  data::IdxArray y{data::kIdxUByte, {split.size()}, split.labels};
  data::WriteIdx(images.string(), x, /*gzip=*/false);
  data::WriteIdx(labels.string(), y, /*gzip=*/false);
}

struct RunResult {
  Outcome outcome;
  report::RunHistory history;
  std::string diagnosis;  // diagnosis.json
  std::string leakage;    // leakage.json

  // Every finding name raised in any epoch, e.g. "LEAKAGE".
  std::vector<std::string> Findings() const {
    std::vector<std::string> names;
    for (const auto& e : history.history.epochs) {
      for (const std::string& f : e.findings) {
        const std::string name = f.substr(0, f.find(':'));
        if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
      }
    }
    return names;
  }
  bool Raised(const std::string& name) const {
    const auto names = Findings();
    return std::find(names.begin(), names.end(), name) != names.end();
  }
  std::string Describe() const {
    std::string s = "findings:";
    for (const auto& n : Findings()) s += " " + n;
    for (const auto& e : history.history.epochs) {
      s += "\n  epoch " + std::to_string(e.epoch) + ": loss " + std::to_string(e.loss) +
           " val_loss " + std::to_string(e.val_loss);
      if (e.gap_timing) {
        s += " timing " + std::to_string(*e.gap_timing) + " dropout " +
             std::to_string(*e.gap_dropout) + " batchnorm " + std::to_string(*e.gap_batchnorm) +
             " data " + std::to_string(*e.gap_data) + " (P_nodrop " +
             std::to_string(*e.probe_nodrop_loss) + ", dropout se " +
             std::to_string(e.gap_dropout_se.value_or(-1)) + ")";
      }
      s += " val_acc " + std::to_string(e.val_accuracy);
      s += " dominant " + e.dominant_term;
    }
    return s;
  }
};

class LossGapScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(std::string(kDataDir) + "/train-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "dataset-fashion-mnist is not installed in " << kDataDir;
    }
  }

  // The reference config with every (from, to) text replacement applied.
  static std::string Config(const std::vector<std::pair<std::string, std::string>>& edits) {
    std::string text =
        ReadFile(fs::path(EPOCHAL_SOURCE_DIR) / "configs" / "fashion_mnist_minivggnet.textproto");
    EXPECT_FALSE(text.empty()) << "cannot read the reference config";
    for (const auto& [from, to] : edits) {
      const std::string before = text;
      text = std::regex_replace(text, std::regex(from), to);
      EXPECT_NE(text, before) << "config edit '" << from << "' matched nothing";
    }
    return text;
  }

  // Writes the splits and the config, trains, and reads the run back.
  RunResult Train(const Split& train, const Split& val, const std::string& config,
                  const std::vector<std::string>& extra) {
    const fs::path data = tmp_.path() / "data";
    const fs::path out = tmp_.path() / ("out" + std::to_string(++runs_));
    fs::create_directories(data);
    WriteSplit(train, data / "train-images-idx3-ubyte.gz", data / "train-labels-idx1-ubyte.gz");
    WriteSplit(val, data / "t10k-images-idx3-ubyte.gz", data / "t10k-labels-idx1-ubyte.gz");
    const fs::path config_path = tmp_.path() / "config.textproto";
    {
      std::FILE* f = std::fopen(config_path.c_str(), "w");
      EXPECT_NE(f, nullptr);
      if (f != nullptr) {
        std::fwrite(config.data(), 1, config.size(), f);
        std::fclose(f);
      }
    }
    std::vector<std::string> cmd = {EPOCHAL_BINARY, "train", "--config", config_path.string(),
                                    "--data-dir",   data,    "--out",    out.string(),
                                    "--threads",    "1",     "--seed",   "7"};
    cmd.insert(cmd.end(), extra.begin(), extra.end());
    RunResult run;
    run.outcome = RunWithTimeout(tmp_.path(), 600, cmd);
    EXPECT_TRUE(run.outcome.Succeeded()) << run.outcome.Describe();
    if (!run.outcome.Succeeded()) return run;
    run.history = report::ReadHistoryJson(out / "history.json");
    run.diagnosis = ReadFile(out / "diagnosis.json");
    run.leakage = ReadFile(out / "leakage.json");
    // The four terms add up to the gap, and the two middle ones to regularization.
    for (const auto& e : run.history.history.epochs) {
      if (!e.gap_timing) continue;
      EXPECT_NEAR(*e.gap_timing + *e.gap_dropout + *e.gap_batchnorm + *e.gap_data,
                  e.val_loss - e.loss, 1e-6)
          << "epoch " << e.epoch;
      EXPECT_NEAR(*e.gap_dropout + *e.gap_batchnorm, *e.gap_regularization, 1e-6)
          << "epoch " << e.epoch;
      for (const auto& se : {e.gap_timing_se, e.gap_dropout_se, e.gap_batchnorm_se,
                             e.gap_regularization_se, e.gap_data_se}) {
        EXPECT_TRUE(se.has_value() && *se >= 0.0) << "epoch " << e.epoch;
      }
    }
    std::printf("%s\n", run.Describe().c_str());  // the margins, for the test log
    return run;
  }

  TempDir tmp_{"epochal_loss_gap_scenarios"};
  int runs_ = 0;
};

// Half the validation set are exact copies of training samples: the scan finds them and
// the diagnosis names leakage rather than an easier validation set.
TEST_F(LossGapScenarioTest, CopiedValidationSamplesRaiseLeakage) {
  const Split train = First(RealTrain(), 1000);
  Split val;
  for (int64_t i = 0; i < 100; ++i) val.Append(RealTrain(), 7 * i);  // in `train`
  for (int64_t i = 0; i < 100; ++i) val.Append(RealTest(), i);
  const RunResult run = Train(train, val, Config({}), {"--epochs", "1"});
  ASSERT_FALSE(HasFailure());
  EXPECT_TRUE(run.Raised("LEAKAGE")) << run.Describe();
  EXPECT_FALSE(run.Raised("VALIDATION_EASIER")) << run.Describe();
  EXPECT_TRUE(Contains(run.leakage, "\"exact\": 100")) << run.leakage;
  EXPECT_TRUE(Contains(run.diagnosis, "LEAKAGE")) << run.diagnosis;
}

// The same kind of run on clean subsets raises no leakage.
TEST_F(LossGapScenarioTest, CleanSubsetsRaiseNoLeakage) {
  const RunResult run =
      Train(First(RealTrain(), 1000), First(RealTest(), 200), Config({}), {"--epochs", "1"});
  ASSERT_FALSE(HasFailure());
  EXPECT_FALSE(run.Raised("LEAKAGE")) << run.Describe();
  EXPECT_TRUE(Contains(run.leakage, "\"exact\": 0")) << run.leakage;
  EXPECT_FALSE(Contains(run.diagnosis, "LEAKAGE")) << run.diagnosis;
}

// Dropout 0.7 in every dropout layer: switching it off on the same samples and weights
// is the largest of the three terms once the steep first epochs (where the timing term
// rivals it) are over.
TEST_F(LossGapScenarioTest, HeavyDropoutMakesRegularizationDominant) {
  const RunResult run = Train(First(RealTrain(), 2000), First(RealTest(), 500),
                              Config({{"rate: 0\\.25", "rate: 0.7"}, {"rate: 0\\.5", "rate: 0.7"}}),
                              {"--epochs", "4", "--batch-size", "16"});
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(run.history.history.epochs.size(), 4u);
  const auto& last = run.history.history.epochs.back();
  EXPECT_EQ(last.dominant_term, "dropout") << run.Describe();
  ASSERT_TRUE(last.gap_regularization.has_value());
  EXPECT_LT(*last.gap_regularization, -0.1) << run.Describe();
  EXPECT_TRUE(run.Raised("REGULARIZATION")) << run.Describe();
  // The sentence names what the model has: dropout, no L2.
  EXPECT_TRUE(std::any_of(last.findings.begin(), last.findings.end(), [](const std::string& f) {
    return Contains(f, "dropout (rates 0.70, 0.70, 0.70)") && !Contains(f, "L2");
  })) << run.Describe();
}

// Validation holds only the three easiest classes: the model's loss on them is far below
// its loss on the training probe, which covers all ten.
TEST_F(LossGapScenarioTest, EasyClassesOnlyRaiseValidationEasier) {
  Split val;
  for (int64_t i = 0; i < RealTest().size() && val.size() < 500; ++i) {
    const uint8_t label = RealTest().labels[static_cast<size_t>(i)];
    if (label == kTrouser || label == kSandal || label == kBag) val.Append(RealTest(), i);
  }
  const RunResult run =
      Train(First(RealTrain(), 3000), val, Config({}), {"--epochs", "2", "--batch-size", "16"});
  ASSERT_FALSE(HasFailure());
  const auto& last = run.history.history.epochs.back();
  ASSERT_TRUE(last.gap_data.has_value());
  EXPECT_LT(*last.gap_data, -0.1) << run.Describe();
  EXPECT_TRUE(run.Raised("VALIDATION_EASIER")) << run.Describe();
  EXPECT_FALSE(run.Raised("LEAKAGE")) << run.Describe();
}

// No dropout and 256 training samples for 20 epochs: the model memorizes its training
// set, the data term grows and validation loss climbs from its best.
TEST_F(LossGapScenarioTest, NoDropoutSmallSubsetManyEpochsRaisesOverfitting) {
  const RunResult run = Train(First(RealTrain(), 256), First(RealTest(), 500),
                              Config({{"rate: 0\\.25", "rate: 0.0"}, {"rate: 0\\.5", "rate: 0.0"}}),
                              {"--epochs", "20", "--batch-size", "16"});
  ASSERT_FALSE(HasFailure());
  EXPECT_TRUE(run.Raised("OVERFITTING")) << run.Describe();
  EXPECT_TRUE(Contains(run.diagnosis, "OVERFITTING")) << run.diagnosis;
  EXPECT_FALSE(run.Raised("LEAKAGE")) << run.Describe();
  // Rate 0 everywhere and no L2: the dropout term cannot exist, and is exactly 0.
  EXPECT_EQ(run.history.history.absent_terms, std::vector<std::string>{"dropout"});
  for (const auto& e : run.history.history.epochs) {
    EXPECT_EQ(*e.gap_dropout, 0.0);
    EXPECT_EQ(*e.gap_dropout_se, 0.0);
  }
  EXPECT_TRUE(Contains(run.diagnosis, "dropout (not present)")) << run.diagnosis;
}

// Dropout 0.7 at all three dropout layers and no L2: the model pays far more in training
// loss than the generalization gap it guards, and keeps paying once learning slows.
TEST_F(LossGapScenarioTest, HeavyDropoutAloneRaisesOverRegularized) {
  const RunResult run = Train(First(RealTrain(), 3000), First(RealTest(), 1000),
                              Config({{"rate: 0\\.25", "rate: 0.7"}, {"rate: 0\\.5", "rate: 0.7"}}),
                              {"--epochs", "4"});
  ASSERT_FALSE(HasFailure());
  EXPECT_TRUE(run.Raised("OVER_REGULARIZED")) << run.Describe();
  EXPECT_FALSE(run.Raised("OVERFITTING")) << run.Describe();
  EXPECT_TRUE(Contains(run.diagnosis, "OVER_REGULARIZED")) << run.diagnosis;
}

// The same with an L2 penalty on top: the cost holds both, and the finding too.
TEST_F(LossGapScenarioTest, HeavyDropoutWithL2RaisesOverRegularized) {
  const RunResult run =
      Train(First(RealTrain(), 3000), First(RealTest(), 1000),
            Config({{"rate: 0\\.25", "rate: 0.6"},
                    {"rate: 0\\.5", "rate: 0.6"},
                    {"momentum: 0\\.9\\b", "momentum: 0.9\n  weight_decay: 0.0005"}}),
            {"--epochs", "4"});
  ASSERT_FALSE(HasFailure());
  EXPECT_TRUE(run.Raised("OVER_REGULARIZED")) << run.Describe();
  const auto& last = run.history.history.epochs.back();
  EXPECT_TRUE(std::any_of(last.findings.begin(), last.findings.end(), [](const std::string& f) {
    return Contains(f, "L2 penalty (weight decay 0.0005)");
  })) << run.Describe();
}

// The reference config on clean subsets: whatever the terms, none of the findings that
// would accuse the data or the setup.
TEST_F(LossGapScenarioTest, ReferenceConfigOnCleanSubsetsRaisesNoFalseAlarm) {
  const RunResult run =
      Train(First(RealTrain(), 4000), First(RealTest(), 1000), Config({}), {"--epochs", "3"});
  ASSERT_FALSE(HasFailure());
  for (const char* name : {"LEAKAGE", "VALIDATION_EASIER", "OVER_REGULARIZED", "OVERFITTING"}) {
    EXPECT_FALSE(run.Raised(name)) << name << "\n" << run.Describe();
  }
}

// 1,000 samples and no dropout: 32 steps of momentum-0.99 running statistics are mostly
// their initial values, so inference mode is far worse than batch statistics. Precise
// batch norm recomputes them before validation and the gap closes.
TEST_F(LossGapScenarioTest, FewStepsRaiseBatchNormLagWhichRecomputingRemoves) {
  const std::vector<std::pair<std::string, std::string>> no_dropout = {
      {"rate: 0\\.25", "rate: 0.0"}, {"rate: 0\\.5", "rate: 0.0"}};
  const RunResult lag = Train(First(RealTrain(), 1000), First(RealTest(), 1000), Config(no_dropout),
                              {"--epochs", "1"});
  ASSERT_FALSE(HasFailure());
  EXPECT_TRUE(lag.Raised("BATCHNORM_LAG")) << lag.Describe();
  EXPECT_TRUE(Contains(lag.diagnosis, "459 steps")) << lag.diagnosis;
  const auto& before = lag.history.history.epochs.back();
  EXPECT_GT(*before.gap_batchnorm, 0.3) << lag.Describe();

  const RunResult precise =
      Train(First(RealTrain(), 1000), First(RealTest(), 1000), Config(no_dropout),
            {"--epochs", "1", "--recompute-bn-stats", "31"});
  ASSERT_FALSE(HasFailure());
  EXPECT_FALSE(precise.Raised("BATCHNORM_LAG")) << precise.Describe();
  const auto& after = precise.history.history.epochs.back();
  EXPECT_LT(std::abs(*after.gap_batchnorm), 0.1) << precise.Describe();
  EXPECT_GT(after.val_accuracy, before.val_accuracy + 0.1) << lag.Describe() << "\n"
                                                           << precise.Describe();
  // Training itself is the same run: only the statistics used for inference differ.
  EXPECT_EQ(after.loss, before.loss);
}

// A run stopped part-way through its second epoch: epoch 1 is complete and diagnosed,
// the 8 steps of epoch 2 are recorded as a partial epoch, never as a full one.
TEST_F(LossGapScenarioTest, AStoppedRunRecordsItsPartialEpoch) {
  const RunResult run = Train(First(RealTrain(), 1000), First(RealTest(), 200), Config({}),
                              {"--epochs", "3", "--stop-after-steps", "40"});
  ASSERT_FALSE(HasFailure());
  const auto& h = run.history.history;
  ASSERT_EQ(h.epochs.size(), 1u) << run.Describe();
  EXPECT_EQ(h.epochs[0].epoch_fraction, 1.0);
  ASSERT_TRUE(h.partial_epoch.has_value());
  EXPECT_EQ(h.partial_epoch->epoch, 2);
  EXPECT_DOUBLE_EQ(h.partial_epoch->epoch_fraction, 8.0 / 32.0);  // 32 steps an epoch
  EXPECT_TRUE(std::isnan(h.partial_epoch->val_loss));
  EXPECT_FALSE(h.partial_epoch->gap_timing.has_value());
  EXPECT_TRUE(h.partial_epoch->findings.empty());
  EXPECT_GT(h.partial_epoch->loss, 0.0);
  EXPECT_TRUE(Contains(run.diagnosis, "\"epoch\": 1,")) << run.diagnosis;
  EXPECT_FALSE(Contains(run.diagnosis, "\"epoch\": 2,")) << run.diagnosis;
}

}  // namespace
}  // namespace epochal
