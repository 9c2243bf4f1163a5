#include "epochal/train/config.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/unprivileged.h"
#include "epochal/core/error.h"

namespace epochal::train {
namespace {

constexpr char kSource[] = "test.textproto";

// A small valid config; tests edit copies of it. Kept as a plain raw string so that
// clang-format leaves its lines and columns alone.
constexpr char kMinimal[] = R"(name: "minimal"
model {
  input { channels: 1 height: 4 width: 4 }
  num_classes: 3
  layers { name: "conv" conv { filters: 2 kernel: 3 padding: "same" } }
  layers { relu {} }
  layers { name: "pool" max_pool { pool: 2 } }
  layers { flatten {} }
  layers { name: "drop" dropout { rate: 0.5 } }
  layers { name: "fc" dense { units: 3 } }
  layers { name: "loss" softmax_cross_entropy {} }
}
optimizer { learning_rate: 0.05 momentum: 0.9 }
training { epochs: 2 batch_size: 8 seed: 7 }
)";

// kMinimal with the first occurrence of `from` replaced by `to`.
std::string Edited(const std::string& from, const std::string& to) {
  std::string text = kMinimal;
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

// "test.textproto:L:C: " for the first occurrence of `token` in `text` (1-based).
std::string PrefixOf(const std::string& text, const std::string& token) {
  const size_t at = text.find(token);
  EXPECT_NE(at, std::string::npos) << token;
  const size_t line_start = text.rfind('\n', at);
  const size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + at, '\n'));
  const size_t column = line_start == std::string::npos ? at + 1 : at - line_start;
  return detail::StrCat(kSource, ":", line, ":", column, ": ");
}

// The message of the InputError that parsing `text` throws; fails the test if none.
std::string ParseError(const std::string& text) {
  try {
    ParseExperimentConfig(text, kSource);
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for:\n" << text;
  return "";
}

std::string LoadError(const std::string& path) {
  try {
    LoadExperimentConfig(path);
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error loading " << path;
  return "";
}

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// A scratch directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "epochal_config_test_XXXXXX";
    EXPECT_NE(mkdtemp(pattern.data()), nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string Write(const std::string& name, const std::string& text) const {
    const std::string path = path_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ConfigLoadTest, LoadsMiniVggNetConfig) {
  const v1::ExperimentConfig config =
      LoadExperimentConfig(EPOCHAL_SOURCE_DIR "/configs/fashion_mnist_minivggnet.textproto");
  EXPECT_EQ(config.name(), "fashion_mnist_minivggnet");
  EXPECT_EQ(config.model().layers_size(), 23);
  EXPECT_EQ(config.model().num_classes(), 10);
  EXPECT_EQ(config.model().class_names_size(), 10);
  EXPECT_EQ(config.model().class_names(9), "ankle boot");
  EXPECT_TRUE(config.model().layers(22).has_softmax_cross_entropy());
  EXPECT_EQ(config.model().layers(21).dense().units(), 10);
  EXPECT_EQ(config.training().batch_size(), 32);
  EXPECT_EQ(config.training().epochs(), 25);
  EXPECT_EQ(config.training().seed(), 42u);
  EXPECT_FLOAT_EQ(config.optimizer().learning_rate(), 0.01f);
  EXPECT_FLOAT_EQ(config.optimizer().momentum(), 0.9f);
  EXPECT_FLOAT_EQ(config.optimizer().decay(), 0.0004f);
  EXPECT_EQ(config.data().train_images(), "train-images-idx3-ubyte.gz");
  // Unnamed layers get "<kind>_<index>".
  EXPECT_EQ(config.model().layers(0).name(), "conv1_1");
  EXPECT_EQ(config.model().layers(1).name(), "relu_1");
}

TEST(ConfigLoadTest, MissingFileNamesThePath) {
  TempDir dir;
  const std::string path = dir.path() + "/absent.textproto";
  const std::string error = LoadError(path);
  EXPECT_TRUE(StartsWith(error, path + ": ")) << error;
  EXPECT_NE(error.find("No such file or directory"), std::string::npos) << error;
}

TEST(ConfigLoadTest, DirectoryIsRejected) {
  TempDir dir;
  const std::string error = LoadError(dir.path());
  EXPECT_TRUE(StartsWith(error, dir.path() + ": ")) << error;
  EXPECT_NE(error.find("directory"), std::string::npos) << error;
}

TEST(ConfigLoadTest, UnreadableFileNamesTheReason) {
  TempDir dir;
  ASSERT_EQ(chmod(dir.path().c_str(), 0711), 0);
  const std::string path = dir.Write("locked.textproto", kMinimal);
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  // As `nobody` when the test runs as root, since root reads files whatever their mode.
  std::string why;
  const std::optional<std::string> child = epochal::testing::RunUnprivileged(
      [&]() -> std::string {
        try {
          LoadExperimentConfig(path);
        } catch (const InputError& e) {
          return e.what();
        }
        return "no error";
      },
      &why);
  ASSERT_TRUE(child) << why;
  const std::string& error = *child;
  EXPECT_TRUE(StartsWith(error, path + ": ")) << error;
  EXPECT_NE(error.find("Permission denied"), std::string::npos) << error;
}

TEST(ConfigLoadTest, ErrorsInAFileCarryItsPath) {
  TempDir dir;
  const std::string path = dir.Write("bad.textproto", Edited("units: 3", "units: 0"));
  const std::string error = LoadError(path);
  EXPECT_TRUE(StartsWith(error, path + ":10:")) << error;
  EXPECT_NE(error.find("model.layers[5].dense.units: must be > 0 (got 0)"), std::string::npos)
      << error;
}

TEST(ConfigParseTest, MinimalConfigParses) {
  const v1::ExperimentConfig config = ParseExperimentConfig(kMinimal, kSource);
  EXPECT_EQ(config.model().layers_size(), 7);
  EXPECT_EQ(config.training().seed(), 7u);
}

TEST(ConfigParseTest, SyntaxErrorReportsLineAndColumn) {
  const std::string text = "name: \"x\"\ntraining {\n  epochs: }\n";
  const std::string error = ParseError(text);
  // The parser stops at the token it did not expect: the "}" on line 3.
  EXPECT_TRUE(StartsWith(error, PrefixOf(text, "}"))) << error;
  EXPECT_TRUE(StartsWith(error, "test.textproto:3:11: ")) << error;
}

TEST(ConfigParseTest, UnterminatedMessageIsReported) {
  const std::string text = "model {\n  num_classes: 3\n";
  const std::string error = ParseError(text);
  EXPECT_EQ(error, "test.textproto:3:1: Expected identifier, got: end of input");
}

TEST(ConfigParseTest, UnknownFieldIsNamedWithItsLine) {
  const std::string text = Edited("kernel: 3", "kernel: 3 filterz: 4");
  const std::string error = ParseError(text);
  EXPECT_TRUE(StartsWith(error, "test.textproto:5:")) << error;
  EXPECT_NE(error.find("\"filterz\""), std::string::npos) << error;
  EXPECT_NE(error.find("epochal.v1.Conv2D"), std::string::npos) << error;
}

TEST(ConfigParseTest, TwoKindsInOneLayerAreRejected) {
  const std::string error = ParseError(Edited("relu {}", "relu {} flatten {}"));
  EXPECT_TRUE(StartsWith(error, "test.textproto:6:")) << error;
  EXPECT_NE(error.find("oneof"), std::string::npos) << error;
}

TEST(ConfigValidationTest, NegativeConvFiltersReportsLineColumnAndPath) {
  const std::string text = Edited("filters: 2", "filters: -3");
  const std::string error = ParseError(text);
  EXPECT_EQ(error,
            PrefixOf(text, "filters") + "model.layers[0].conv.filters: must be > 0 (got -3)");
  EXPECT_TRUE(StartsWith(error, "test.textproto:5:32: ")) << error;
}

TEST(ConfigValidationTest, FieldsInListSyntaxLayersAreLocated) {
  const std::string text =
      "model {\n"
      "  input { channels: 1 height: 2 width: 2 }\n"
      "  num_classes: 2\n"
      "  layers: [ { flatten {} },\n"
      "            { dense { units: -1 } },\n"
      "            { softmax_cross_entropy {} } ]\n"
      "}\n";
  const std::string error = ParseError(text);
  EXPECT_TRUE(StartsWith(error, PrefixOf(text, "units") + "model.layers[1].dense.units: "))
      << error;
}

TEST(ConfigValidationTest, DropoutRateOfOneIsRejected) {
  const std::string text = Edited("rate: 0.5", "rate: 1.0");
  EXPECT_EQ(ParseError(text),
            PrefixOf(text, "rate") + "model.layers[4].dropout.rate: must be in [0, 1) (got 1)");
}

TEST(ConfigValidationTest, SoftmaxBeforeTheEndIsRejected) {
  const std::string text = Edited("layers { flatten {} }", "layers { softmax_cross_entropy {} }");
  const std::string error = ParseError(text);
  EXPECT_TRUE(StartsWith(error, PrefixOf(text, "softmax_cross_entropy") +
                                    "model.layers[3].softmax_cross_entropy: must be the last"))
      << error;
}

TEST(ConfigValidationTest, LastLayerMustBeSoftmax) {
  const std::string text = Edited("layers { name: \"loss\" softmax_cross_entropy {} }", "");
  const std::string error = ParseError(text);
  EXPECT_EQ(error, PrefixOf(text, "layers { name: \"fc\"") +
                       "model.layers[5]: the last layer must be softmax_cross_entropy (got dense)");
}

TEST(ConfigValidationTest, LastDenseUnitsMustEqualNumClasses) {
  const std::string text = Edited("units: 3", "units: 4");
  EXPECT_EQ(ParseError(text),
            PrefixOf(text, "units") +
                "model.layers[5].dense.units: the last dense layer must have num_classes = 3 "
                "units (got 4)");
}

TEST(ConfigValidationTest, ClassNamesCountMustMatch) {
  const std::string text = Edited("num_classes: 3", "num_classes: 3 class_names: [\"a\", \"b\"]");
  EXPECT_EQ(ParseError(text), PrefixOf(text, "class_names") +
                                  "model.class_names: has 2 entries, but num_classes is 3");
}

TEST(ConfigValidationTest, NumClassesBelowTwoIsRejected) {
  const std::string text = Edited("num_classes: 3", "num_classes: 1");
  const std::string error = ParseError(text);
  EXPECT_TRUE(
      StartsWith(error, PrefixOf(text, "num_classes") + "model.num_classes: must be >= 2 (got 1)"))
      << error;
}

TEST(ConfigValidationTest, MissingModelIsReportedAtTheTop) {
  EXPECT_EQ(ParseError("name: \"x\"\n"), "test.textproto:1:1: model: missing");
  EXPECT_EQ(ParseError(""), "test.textproto:1:1: model: missing");
}

TEST(ConfigValidationTest, MissingInputIsReportedAtTheModel) {
  const std::string text = Edited("input { channels: 1 height: 4 width: 4 }", "");
  EXPECT_EQ(ParseError(text), PrefixOf(text, "model") + "model.input: missing");
}

TEST(ConfigValidationTest, UnsetInputFieldIsReportedAtTheInput) {
  const std::string text = Edited("height: 4 ", "");
  EXPECT_EQ(ParseError(text), PrefixOf(text, "input") + "model.input.height: must be > 0 (got 0)");
}

TEST(ConfigValidationTest, ModelWithoutLayersIsRejected) {
  const std::string text =
      "model {\n  input { channels: 1 height: 1 width: 1 }\n  num_classes: 2\n}\n";
  const std::string error = ParseError(text);
  EXPECT_TRUE(StartsWith(error, "test.textproto:1:1: model.layers: missing")) << error;
}

TEST(ConfigValidationTest, LayerWithoutKindIsRejected) {
  const std::string text = Edited("layers { relu {} }", "layers { name: \"nothing\" }");
  EXPECT_EQ(ParseError(text), PrefixOf(text, "layers { name: \"nothing\"") +
                                  "model.layers[1]: no layer kind set (expected one of conv, "
                                  "batch_norm, relu, max_pool, dropout, dense, flatten, "
                                  "softmax_cross_entropy)");
}

TEST(ConfigValidationTest, ConvPaddingMustBeSameOrValid) {
  const std::string text = Edited("\"same\"", "\"full\"");
  EXPECT_EQ(ParseError(text),
            PrefixOf(text, "padding") +
                "model.layers[0].conv.padding: must be \"same\" or \"valid\" (got \"full\")");
}

TEST(ConfigValidationTest, DuplicateLayerNamesAreRejected) {
  const std::string text = Edited("name: \"drop\"", "name: \"pool\"");
  EXPECT_EQ(ParseError(text), PrefixOf(text, "name: \"pool\" dropout") +
                                  "model.layers[4].name: duplicate layer name \"pool\" (also "
                                  "model.layers[2])");
}

TEST(ConfigValidationTest, NameCollidingWithADefaultNameIsRejected) {
  // Layer 1 (relu) is unnamed and so becomes "relu_1".
  const std::string text = Edited("name: \"drop\"", "name: \"relu_1\"");
  const std::string error = ParseError(text);
  EXPECT_NE(error.find("model.layers[4].name: duplicate layer name \"relu_1\""), std::string::npos)
      << error;
}

TEST(ConfigValidationTest, NegativeLearningRateReportsItsLine) {
  const std::string text = Edited("learning_rate: 0.05", "learning_rate: -1");
  const std::string error = ParseError(text);
  EXPECT_EQ(error, PrefixOf(text, "learning_rate") +
                       "optimizer.learning_rate: must be finite and > 0 (got -1)");
  EXPECT_TRUE(StartsWith(error, "test.textproto:13:")) << error;
}

TEST(ConfigValidationTest, NonFiniteLearningRateIsRejected) {
  for (const char* value : {"nan", "inf"}) {
    const std::string error =
        ParseError(Edited("learning_rate: 0.05", std::string("learning_rate: ") + value));
    EXPECT_NE(error.find("optimizer.learning_rate: must be finite and > 0"), std::string::npos)
        << error;
  }
}

TEST(ConfigValidationTest, OptimizerRangesAreChecked) {
  EXPECT_NE(ParseError(Edited("momentum: 0.9", "momentum: 1")).find("optimizer.momentum: "),
            std::string::npos);
  EXPECT_NE(ParseError(Edited("momentum: 0.9", "weight_decay: -0.1"))
                .find("optimizer.weight_decay: must be finite and >= 0 (got -0.1)"),
            std::string::npos);
  EXPECT_NE(ParseError(Edited("momentum: 0.9", "decay: -1")).find("optimizer.decay: "),
            std::string::npos);
}

TEST(ConfigValidationTest, LayerRangesAreChecked) {
  EXPECT_NE(ParseError(Edited("kernel: 3", "kernel: 0")).find("model.layers[0].conv.kernel: "),
            std::string::npos);
  EXPECT_NE(ParseError(Edited("kernel: 3", "kernel: 3 stride: -1"))
                .find("model.layers[0].conv.stride: must be > 0 (got -1)"),
            std::string::npos);
  EXPECT_NE(ParseError(Edited("kernel: 3", "kernel: 3 pad: -1")).find("model.layers[0].conv.pad: "),
            std::string::npos);
  EXPECT_NE(ParseError(Edited("pool: 2", "pool: 0")).find("model.layers[2].max_pool.pool: "),
            std::string::npos);
  EXPECT_NE(
      ParseError(Edited("pool: 2", "pool: 2 stride: -2")).find("model.layers[2].max_pool.stride: "),
      std::string::npos);
  EXPECT_NE(ParseError(Edited("rate: 0.5", "rate: -0.5")).find("model.layers[4].dropout.rate: "),
            std::string::npos);
  const std::string bn = "layers { name: \"bn\" batch_norm { epsilon: -1 momentum: 1.5 } }";
  const std::string error = ParseError(Edited("layers { relu {} }", bn));
  EXPECT_NE(error.find("model.layers[1].batch_norm.epsilon: must be finite and > 0 (got -1)"),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("model.layers[1].batch_norm.momentum: must be in [0, 1) (got 1.5)"),
            std::string::npos)
      << error;
}

TEST(ConfigValidationTest, TrainingAndDataRangesAreChecked) {
  const std::string text = Edited("batch_size: 8", "batch_size: -8");
  EXPECT_EQ(ParseError(text),
            PrefixOf(text, "batch_size") + "training.batch_size: must be > 0 (got -8)");
  EXPECT_NE(ParseError(Edited("epochs: 2", "epochs: -2")).find("training.epochs: must be > 0"),
            std::string::npos);
  const std::string data = std::string(kMinimal) + "data { limit_train: -1 limit_val: -2 }\n";
  const std::string error = ParseError(data);
  EXPECT_NE(error.find("data.limit_train: must be >= 0 (got -1)"), std::string::npos) << error;
  EXPECT_NE(error.find("data.limit_val: must be >= 0 (got -2)"), std::string::npos) << error;
}

TEST(ConfigValidationTest, AllreduceProgressMustBeAKnownMode) {
  const std::string text = Edited("batch_size: 8", "batch_size: 8 allreduce_progress: \"spin\"");
  const std::string error = ParseError(text);
  EXPECT_NE(error.find("training.allreduce_progress: must be \"auto\", \"thread\" or \"poll\" "
                       "(got \"spin\")"),
            std::string::npos)
      << error;
  for (const char* mode : {"auto", "thread", "poll"}) {
    EXPECT_NO_THROW(ParseExperimentConfig(
        Edited("batch_size: 8", std::string("batch_size: 8 allreduce_progress: \"") + mode + "\""),
        kSource))
        << mode;
  }
}

TEST(ConfigValidationTest, PrecisionMustBeAKnownMode) {
  const std::string text = Edited("batch_size: 8", "batch_size: 8 precision: \"fp16\"");
  const std::string error = ParseError(text);
  EXPECT_NE(error.find("training.precision: must be \"auto\", \"f32\" or \"bf16\" "
                       "(got \"fp16\")"),
            std::string::npos)
      << error;
  // bf16 parses anywhere: whether the CPU can run it is decided where the model is built.
  for (const char* mode : {"auto", "f32", "bf16"}) {
    EXPECT_NO_THROW(ParseExperimentConfig(
        Edited("batch_size: 8", std::string("batch_size: 8 precision: \"") + mode + "\""), kSource))
        << mode;
  }
}

TEST(ConfigValidationTest, AllreducePrecisionMustBeF32OrBf16) {
  for (const char* bad : {"fp16", "auto", "BF16"}) {
    const std::string text =
        Edited("batch_size: 8", std::string("batch_size: 8 allreduce_precision: \"") + bad + "\"");
    const std::string error = ParseError(text);
    EXPECT_NE(error.find(std::string("training.allreduce_precision: must be \"f32\" or \"bf16\" "
                                     "(got \"") +
                         bad + "\")"),
              std::string::npos)
        << error;
  }
  for (const char* mode : {"", "f32", "bf16"}) {
    EXPECT_NO_THROW(ParseExperimentConfig(
        Edited("batch_size: 8", std::string("batch_size: 8 allreduce_precision: \"") + mode + "\""),
        kSource))
        << mode;
  }
}

TEST(ConfigValidationTest, AllErrorsAreListedOnePerLine) {
  std::string text = Edited("filters: 2", "filters: -1");
  text.replace(text.find("epochs: 2"), 9, "epochs: -1");
  const std::string error = ParseError(text);
  EXPECT_EQ(std::count(error.begin(), error.end(), '\n'), 1) << error;
  EXPECT_TRUE(StartsWith(error, PrefixOf(text, "filters"))) << error;
  EXPECT_NE(error.find("\n" + PrefixOf(text, "epochs") + "training.epochs: must be > 0"),
            std::string::npos)
      << error;
}

TEST(ConfigValidationTest, WithoutLocationsMessagesNameTheSource) {
  v1::ExperimentConfig config = ParseExperimentConfig(kMinimal, kSource);
  config.mutable_optimizer()->set_learning_rate(-2);  // As a command-line override would.
  try {
    ValidateExperimentConfig(config, "--lr", nullptr);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "--lr: optimizer.learning_rate: must be finite and > 0 (got -2)");
  }
  EXPECT_NO_THROW(ValidateExperimentConfig(ParseExperimentConfig(kMinimal, kSource), "", nullptr));
}

// ---------------------------------------------------------------------------------------
// Zeros are values (issue 14, item 8): where the schema says a value is positive, an
// explicit 0 is an error at its line, and only an absent field takes the default.

TEST(ConfigZeroTest, ExplicitZerosWhereTheSchemaSaysPositiveAreRejectedAtTheirLine) {
  struct Case {
    std::string from, to, token, message;
  };
  const std::vector<Case> cases = {
      {"epochs: 2", "epochs: 0", "epochs", "training.epochs: must be > 0 (got 0)"},
      {"batch_size: 8", "batch_size: 0", "batch_size", "training.batch_size: must be > 0 (got 0)"},
      {"learning_rate: 0.05", "learning_rate: 0", "learning_rate",
       "optimizer.learning_rate: must be finite and > 0 (got 0)"},
      {"kernel: 3", "kernel: 3 stride: 0", "stride",
       "model.layers[0].conv.stride: must be > 0 (got 0)"},
      {"pool: 2", "pool: 2 stride: 0", "stride",
       "model.layers[2].max_pool.stride: must be > 0 (got 0)"},
      {"layers { relu {} }", "layers { batch_norm { epsilon: 0 } }", "epsilon",
       "model.layers[1].batch_norm.epsilon: must be finite and > 0 (got 0)"},
  };
  for (const Case& c : cases) {
    const std::string text = Edited(c.from, c.to);
    EXPECT_EQ(ParseError(text), PrefixOf(text, c.token) + c.message) << c.to;
  }
}

TEST(ConfigZeroTest, AbsentFieldsStillTakeTheirDefaults) {
  std::string text = Edited("training { epochs: 2 batch_size: 8 seed: 7 }", "training { seed: 7 }");
  text.replace(text.find("learning_rate: 0.05 "), 20, "");
  text.replace(text.find("layers { relu {} }"), 18, "layers { batch_norm {} }");
  const v1::ExperimentConfig config = ParseExperimentConfig(text, kSource);
  EXPECT_EQ(config.training().epochs(), 25);
  EXPECT_EQ(config.training().batch_size(), 32);
  EXPECT_FLOAT_EQ(config.optimizer().learning_rate(), 0.01f);
  EXPECT_FLOAT_EQ(config.model().layers(1).batch_norm().epsilon(), 1e-3f);
  EXPECT_FLOAT_EQ(config.model().layers(1).batch_norm().momentum(), 0.99f);
  EXPECT_EQ(config.model().layers(0).conv().stride(), 1);
  EXPECT_EQ(config.model().layers(2).max_pool().stride(), 2);
}

TEST(ConfigZeroTest, BatchNormMomentumZeroIsAValueNotTheDefault) {
  const v1::ExperimentConfig config = ParseExperimentConfig(
      Edited("layers { relu {} }", "layers { batch_norm { momentum: 0 } }"), kSource);
  EXPECT_TRUE(config.model().layers(1).batch_norm().has_momentum());
  EXPECT_EQ(config.model().layers(1).batch_norm().momentum(), 0.0f);
}

// ---------------------------------------------------------------------------------------
// The analysis section (item 9): every threshold is checked at load, with its line.

TEST(ConfigAnalysisTest, NonFiniteAndNegativeThresholdsAreRejectedAtTheirLine) {
  struct Case {
    std::string field, value, message;
  };
  const std::vector<Case> cases = {
      {"term_threshold", "nan", "must be finite and >= 0 (got nan)"},
      {"term_threshold", "-0.1", "must be finite and >= 0 (got -0.1)"},
      {"overfit_threshold", "inf", "must be finite and >= 0 (got inf)"},
      {"overfit_rise", "-1", "must be finite and >= 0 (got -1)"},
      {"over_regularized_ratio", "inf", "must be finite and >= 0 (got inf)"},
      {"leakage_fraction", "-5", "must be in [0, 1] (got -5)"},
      {"leakage_fraction", "nan", "must be in [0, 1] (got nan)"},
      {"near_rmse", "nan", "must be in [0, 1] (got nan)"},
      {"near_rmse", "2", "must be in [0, 1] (got 2)"},
      {"probe_samples", "-3", "must be >= 0 (got -3)"},
  };
  for (const Case& c : cases) {
    const std::string text =
        std::string(kMinimal) + "analysis {\n  " + c.field + ": " + c.value + "\n}\n";
    EXPECT_EQ(ParseError(text), PrefixOf(text, c.field) + "analysis." + c.field + ": " + c.message)
        << c.field << ": " << c.value;
  }
}

TEST(ConfigAnalysisTest, ValidThresholdsAndZeroProbesAreAccepted) {
  const std::string text = std::string(kMinimal) +
                           "analysis { probe_samples: 0 term_threshold: 0 overfit_threshold: 0.1 "
                           "overfit_rise: 0 over_regularized_ratio: 2 leakage_fraction: 1 "
                           "near_rmse: 0 }\n";
  const v1::ExperimentConfig config = ParseExperimentConfig(text, kSource);
  EXPECT_EQ(config.analysis().probe_samples(), 0);
  EXPECT_FLOAT_EQ(config.analysis().leakage_fraction(), 1.0f);
}

// ---------------------------------------------------------------------------------------
// The layer stack with shapes (item 10): the first layer that cannot take its input is
// named with its index, name and line, before anything is allocated.

TEST(ConfigShapeTest, DenseWithoutFlattenIsRejectedAtTheDenseLayer) {
  const std::string text = Edited("layers { flatten {} }\n", "");
  EXPECT_EQ(ParseError(text),
            PrefixOf(text, "dense {") +
                "model.layers[4].dense: layer 4 (\"fc\"): a dense layer needs a flat input, but "
                "its input is 2x2x2; add a flatten layer before it");
}

TEST(ConfigShapeTest, ConvAfterDenseIsRejectedAtTheConv) {
  const std::string text =
      Edited("layers { name: \"drop\"",
             "layers { name: \"late\" conv { filters: 2 kernel: 1 } }\n  layers { name: \"drop\"");
  const std::string error = ParseError(text);
  EXPECT_EQ(error, PrefixOf(text, "conv { filters: 2 kernel: 1") +
                       "model.layers[4].conv: layer 4 (\"late\"): a conv needs a channels x height "
                       "x width input, but its input is 8 features (a conv must come before "
                       "flatten and dense layers)");
}

TEST(ConfigShapeTest, KernelOrPoolLargerThanTheInputIsRejected) {
  const std::string conv = Edited("kernel: 3 padding: \"same\"", "kernel: 5 padding: \"valid\"");
  EXPECT_NE(ParseError(conv).find("model.layers[0].conv: layer 0 (\"conv\"): kernel 5 does not fit "
                                  "its input is 1x4x4"),
            std::string::npos)
      << ParseError(conv);
  const std::string pool = Edited("pool: 2", "pool: 5");
  EXPECT_NE(ParseError(pool).find("model.layers[2].max_pool: layer 2 (\"pool\"): pool 5 does not "
                                  "fit its input is 2x4x4"),
            std::string::npos)
      << ParseError(pool);
}

TEST(ConfigShapeTest, LossNeedsNumClassesFlatValues) {
  // No flatten and no dense: the loss gets an image.
  std::string text = Edited("layers { flatten {} }\n", "");
  text.replace(text.find("  layers { name: \"fc\" dense { units: 3 } }\n"), 42, "");
  const std::string error = ParseError(text);
  EXPECT_NE(error.find("softmax_cross_entropy needs num_classes = 3 values per sample, but its "
                       "input is 2x2x2 (add flatten and dense layers before it)"),
            std::string::npos)
      << error;
  // A flatten straight into the loss works only when it gives num_classes values.
  const std::string flat = Edited("  layers { name: \"fc\" dense { units: 3 } }\n", "");
  EXPECT_NE(ParseError(flat).find("but its input is 8 features"), std::string::npos)
      << ParseError(flat);
}

TEST(ConfigShapeTest, TheReferenceModelPasses) {
  EXPECT_NO_THROW(
      LoadExperimentConfig(EPOCHAL_SOURCE_DIR "/configs/fashion_mnist_minivggnet.textproto"));
}

// ---------------------------------------------------------------------------------------
// Memory estimate (item 7).

TEST(ConfigMemoryTest, ReferenceModelIsFarBelowTheDefaultLimit) {
  const v1::ExperimentConfig config =
      LoadExperimentConfig(EPOCHAL_SOURCE_DIR "/configs/fashion_mnist_minivggnet.textproto");
  const ModelMemoryEstimate e = EstimateModelMemory(config);
  // MiniVGGNet: about 1.67 M parameters.
  EXPECT_GT(e.parameters, 1.5e6);
  EXPECT_LT(e.parameters, 1.8e6);
  EXPECT_LT(e.bytes, kDefaultMaxModelMemoryBytes / 16);
  EXPECT_NO_THROW(CheckModelMemory(config, kDefaultMaxModelMemoryBytes, "x"));
}

TEST(ConfigMemoryTest, HugeConvIsRefusedNamingTheLayerAndTheFlag) {
  const v1::ExperimentConfig config =
      ParseExperimentConfig(Edited("input { channels: 1 height: 4 width: 4 }",
                                   "input { channels: 1 height: 28 width: 28 }"),
                            kSource);
  v1::ExperimentConfig huge = config;
  huge.mutable_model()->mutable_layers(0)->mutable_conv()->set_filters(100000);
  huge.mutable_training()->set_batch_size(32);
  // Validation alone accepts it (the layer stack is sound)...
  EXPECT_NO_THROW(ValidateExperimentConfig(huge, kSource, nullptr));
  // ... the estimate refuses it: 100000 x 28 x 28 values per sample.
  try {
    CheckModelMemory(huge, kDefaultMaxModelMemoryBytes, kSource);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_TRUE(StartsWith(message, std::string(kSource) + ": the model needs about ")) << message;
    EXPECT_NE(message.find("model.layers[0] (\"conv\", conv) with 78.4 M values per sample"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("above the limit of 8 GiB"), std::string::npos) << message;
    EXPECT_NE(message.find("--max-model-memory"), std::string::npos) << message;
  }
  // A higher limit lets it through.
  EXPECT_NO_THROW(CheckModelMemory(huge, 1e15, kSource));
}

// ---------------------------------------------------------------------------------------
// Strings must be UTF-8 (item 1, the load-time part).

TEST(ConfigUtf8Test, InvalidUtf8InANameIsRejectedAtItsLine) {
  const std::string text = Edited("name: \"minimal\"", "name: \"min\xFF\xFEimal\"");
  EXPECT_EQ(ParseError(text),
            PrefixOf(text, "name:") + "name: is not valid UTF-8 (byte 3 is 0xFF)");
  const std::string layer = Edited("name: \"conv\"", "name: \"co\xC0\xAFnv\"");  // overlong "/"
  EXPECT_EQ(ParseError(layer), PrefixOf(layer, "name: \"co") +
                                   "model.layers[0].name: is not valid UTF-8 (byte 2 is 0xC0)");
}

TEST(ConfigUtf8Test, InvalidUtf8InAClassNameIsRejectedAtItsLine) {
  const std::string text =
      Edited("num_classes: 3",
             "num_classes: 3\n  class_names: \"a\"\n  class_names: \"\xFF\xFE\"\n"
             "  class_names: \"c\"");
  EXPECT_EQ(ParseError(text), PrefixOf(text, "class_names: \"\xFF") +
                                  "model.class_names[1]: is not valid UTF-8 (byte 0 is 0xFF)");
}

TEST(ConfigUtf8Test, ValidMultiByteUtf8IsAccepted) {
  const v1::ExperimentConfig config = ParseExperimentConfig(
      Edited("name: \"minimal\"",
             "name: \"T-shirt \xC3\xA9t\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x91\x95\""),
      kSource);
  EXPECT_EQ(config.name(), "T-shirt \xC3\xA9t\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x91\x95");
}

// ---------------------------------------------------------------------------------------
// Reads are capped (item 7).

TEST(ConfigLoadTest, EndlessFileFailsAtOnceNamingTheCap) {
  const auto start = std::chrono::steady_clock::now();
  const std::string error = LoadError("/dev/zero");
  EXPECT_EQ(error, "/dev/zero: config is larger than its limit of 1 MiB; is this the right file?");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST(ConfigLoadTest, OversizedFileIsRejectedBeforeReading) {
  TempDir dir;
  const std::string path =
      dir.Write("big.textproto", std::string(kMinimal) + std::string(1024 * 1024, '\n'));
  EXPECT_EQ(LoadError(path), path +
                                 ": config is larger than its limit of 1 MiB; is this the "
                                 "right file?");
}

TEST(ConfigDefaultsTest, UnsetFieldsGetTheDocumentedDefaults) {
  const std::string text =
      "model {\n"
      "  input { channels: 1 height: 4 width: 4 }\n"
      "  num_classes: 3\n"
      "  layers { conv { filters: 2 kernel: 3 } }\n"
      "  layers { batch_norm {} }\n"
      "  layers { max_pool { pool: 2 } }\n"
      "  layers { flatten {} }\n"
      "  layers { dense { units: 3 } }\n"
      "  layers { softmax_cross_entropy {} }\n"
      "}\n";
  const v1::ExperimentConfig config = ParseExperimentConfig(text, kSource);
  EXPECT_EQ(config.training().batch_size(), 32);
  EXPECT_EQ(config.training().epochs(), 25);
  EXPECT_EQ(config.training().seed(), 0u);
  EXPECT_FLOAT_EQ(config.optimizer().learning_rate(), 0.01f);
  EXPECT_FLOAT_EQ(config.optimizer().momentum(), 0.0f);
  EXPECT_EQ(config.data().data_dir(), "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(config.data().train_images(), "train-images-idx3-ubyte.gz");
  EXPECT_EQ(config.data().train_labels(), "train-labels-idx1-ubyte.gz");
  EXPECT_EQ(config.data().val_images(), "t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(config.data().val_labels(), "t10k-labels-idx1-ubyte.gz");
  const v1::ModelSpec& model = config.model();
  EXPECT_EQ(std::vector<std::string>(model.class_names().begin(), model.class_names().end()),
            (std::vector<std::string>{"0", "1", "2"}));
  const std::vector<std::string> names = {"conv_0",    "batch_norm_1", "max_pool_2",
                                          "flatten_3", "dense_4",      "softmax_cross_entropy_5"};
  ASSERT_EQ(model.layers_size(), 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(model.layers(i).name(), names[i]);
  EXPECT_EQ(model.layers(0).conv().stride(), 1);
  EXPECT_FLOAT_EQ(model.layers(1).batch_norm().epsilon(), 1e-3f);
  EXPECT_FLOAT_EQ(model.layers(1).batch_norm().momentum(), 0.99f);
  EXPECT_EQ(model.layers(2).max_pool().stride(), 2);
}

TEST(ConfigDefaultsTest, GivenValuesAreKept) {
  const v1::ExperimentConfig config = ParseExperimentConfig(kMinimal, kSource);
  EXPECT_EQ(config.training().batch_size(), 8);
  EXPECT_EQ(config.training().epochs(), 2);
  EXPECT_FLOAT_EQ(config.optimizer().learning_rate(), 0.05f);
  EXPECT_EQ(config.model().layers(0).name(), "conv");
  EXPECT_EQ(config.model().layers(1).name(), "relu_1");
}

TEST(ConfigDefaultsTest, ApplyDefaultsIsIdempotentAndKeepsModelAbsent) {
  v1::ExperimentConfig config = ParseExperimentConfig(kMinimal, kSource);
  v1::ExperimentConfig again = config;
  ApplyDefaults(&again);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(config, again));

  v1::ExperimentConfig empty;
  ApplyDefaults(&empty);
  EXPECT_FALSE(empty.has_model());
  EXPECT_EQ(empty.training().batch_size(), 32);
}

TEST(ConfigJsonTest, UsesProtoFieldNamesAndRoundTrips) {
  const v1::ExperimentConfig config =
      LoadExperimentConfig(EPOCHAL_SOURCE_DIR "/configs/fashion_mnist_minivggnet.textproto");
  const std::string json = ConfigToJson(config);
  ASSERT_FALSE(json.empty());
  EXPECT_EQ(json.front(), '{');
  EXPECT_EQ(json.back(), '}');
  EXPECT_EQ(json.find('\n'), std::string::npos) << "not compact";
  EXPECT_NE(json.find("\"learning_rate\":0.01"), std::string::npos) << json;
  EXPECT_NE(json.find("\"batch_size\":32"), std::string::npos) << json;
  EXPECT_NE(json.find("\"softmax_cross_entropy\":{}"), std::string::npos) << json;
  EXPECT_EQ(json.find("learningRate"), std::string::npos) << json;
  // Defaults are printed too, so history.json records every value the run used.
  EXPECT_NE(json.find("\"weight_decay\":0"), std::string::npos) << json;

  v1::ExperimentConfig parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &parsed).ok()) << json;
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(config, parsed));
}

}  // namespace
}  // namespace epochal::train
