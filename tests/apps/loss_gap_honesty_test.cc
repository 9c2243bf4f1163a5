// Are the stated standard errors honest? One set of trained weights, the real binary's
// `epochal evaluate --probe` with sixteen different probe seeds: the scatter of each
// probe-driven quantity over the seeds must match the standard error each run states.
// Too small an error (say, unpaired differences treated as exact, or a missing sqrt(n))
// and the scatter exceeds it; too large (unpaired errors where the samples pair) and it
// falls far below.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "process_util.h"

namespace epochal {
namespace {

namespace fs = std::filesystem;
using ::epochal::test::Outcome;
using ::epochal::test::RunWithTimeout;
using ::epochal::test::TempDir;

constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist";
constexpr int kSeeds = 16;

std::map<std::string, double> ParseNumbers(const std::string& json) {
  google::protobuf::Struct s;
  std::map<std::string, double> out;
  if (!google::protobuf::util::JsonStringToMessage(json, &s).ok()) return out;
  for (const auto& [key, value] : s.fields()) {
    if (value.kind_case() == google::protobuf::Value::kNumberValue) {
      out[key] = value.number_value();
    }
  }
  return out;
}

TEST(LossGapHonestyTest, StandardErrorsMatchTheScatterOverProbeSeeds) {
  if (!fs::exists(std::string(kDataDir) + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed in " << kDataDir;
  }
  TempDir tmp("epochal_honesty");
  const std::string config =
      (fs::path(EPOCHAL_SOURCE_DIR) / "configs" / "fashion_mnist_minivggnet.textproto").string();
  const fs::path out = tmp.path() / "run";
  // One epoch on 2,000 samples: dropout, batch norm and a loss far from zero.
  const Outcome trained =
      RunWithTimeout(tmp.path(), 300,
                     {EPOCHAL_BINARY, "train", "--config", config, "--epochs", "1", "--limit-train",
                      "2000", "--limit-val", "200", "--threads", "1", "--out", out.string(),
                      "--no-scan", "--no-checkpoints"});
  ASSERT_TRUE(trained.Succeeded()) << trained.Describe();

  // Each seed draws another 250 of 10,000 training samples.
  const std::vector<std::string> quantities = {"probe_train_loss", "probe_eval_loss", "gap_dropout",
                                               "gap_batchnorm", "gap_regularization"};
  const std::map<std::string, std::string> error_of = {
      {"probe_train_loss", "probe_train_loss_se"},
      {"probe_eval_loss", "probe_eval_loss_se"},
      {"gap_dropout", "gap_dropout_se"},
      {"gap_batchnorm", "gap_batchnorm_se"},
      {"gap_regularization", "gap_regularization_se"}};
  std::map<std::string, std::vector<double>> values, errors;
  for (int seed = 1; seed <= kSeeds; ++seed) {
    const Outcome run = RunWithTimeout(
        tmp.path(), 120,
        {EPOCHAL_BINARY, "evaluate", "--config", config, "--weights", (out / "weights.pb").string(),
         "--probe", "--probe-samples", "250", "--probe-seed", std::to_string(seed), "--limit-train",
         "10000", "--limit-val", "200", "--threads", "1", "--json"});
    ASSERT_TRUE(run.Succeeded()) << run.Describe();
    const auto numbers = ParseNumbers(run.out);
    for (const std::string& q : quantities) {
      ASSERT_TRUE(numbers.count(q) && numbers.count(error_of.at(q))) << q << " in " << run.out;
      values[q].push_back(numbers.at(q));
      errors[q].push_back(numbers.at(error_of.at(q)));
    }
  }
  for (const std::string& q : quantities) {
    double mean = 0, stated = 0;
    for (int i = 0; i < kSeeds; ++i) {
      mean += values[q][i] / kSeeds;
      stated += errors[q][i] / kSeeds;
    }
    double var = 0;
    for (double v : values[q]) var += (v - mean) * (v - mean) / (kSeeds - 1);
    const double scatter = std::sqrt(var);
    const double ratio = scatter / stated;
    std::printf("%-20s mean %+.5f  scatter over seeds %.5f  stated error %.5f  ratio %.2f\n",
                q.c_str(), mean, scatter, stated, ratio);
    // Sixteen draws estimate a standard deviation to about +-18 % (1 sigma); the band
    // leaves room for that and for the correlation of training-mode losses within a
    // mini-batch, and still catches an error off by a factor of two.
    EXPECT_GT(ratio, 0.55) << q << ": the stated error is too large";
    EXPECT_LT(ratio, 1.7) << q << ": the stated error is too small";
  }
}

}  // namespace
}  // namespace epochal
