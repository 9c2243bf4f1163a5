// End-to-end tests of data-parallel training: each test launches
// `mpiexec -n N epochal train|evaluate ...` itself (under `timeout`, so a hang fails the
// test) on a few hundred samples of the real Fashion-MNIST files, then reads what rank 0
// wrote (history.json, weights.pb) and what every rank printed.
//
// The contracts under test:
//   - Equivalence: with --sync-batch-norm, N ranks at batch B/N take the same step as one
//     rank at batch B (dropout masks follow sample ids, not ranks), up to float rounding.
//   - Validation is sharded over the ranks but its result does not depend on their number.
//   - Replicas stay bit-identical, over shared memory and over TCP.
//   - A bad file on any one rank ends every rank promptly with one message naming it.
//   - A stop control word ends every rank after the same global step.
//   - --fixed-global-batch makes --batch-size the global batch.
//
// Runs are kept tiny (--threads 1, a few hundred samples, at most 20 steps), and CTest
// runs these tests one at a time (RUN_SERIAL in CMakeLists.txt): each starts several
// ranks on what may be a small machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "epochal/v1/weights.pb.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "process_util.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Struct;
using google::protobuf::Value;
using test::Contains;
using test::Outcome;
using test::ReadFile;
using test::TempDir;

constexpr char kBinary[] = EPOCHAL_BINARY;
constexpr char kMpiexec[] = EPOCHAL_MPIEXEC;
constexpr char kSourceDir[] = EPOCHAL_SOURCE_DIR;
constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist";
// Generous: the runs take seconds, but the machine may be busy with other work.
constexpr int kTimeoutSeconds = 240;

// Open MPI over TCP sockets on loopback only (it leaves loopback out of TCP by default),
// instead of shared memory: the path a cluster without shared memory takes.
const std::vector<std::string> kOverTcp = {
    "--mca", "pml", "ob1", "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"};

fs::path ConfigPath() {
  return fs::path(kSourceDir) / "configs/fashion_mnist_minivggnet.textproto";
}

// Open MPI refuses to start as root (as in CI containers) unless told it may.
const std::vector<std::string> kMpiEnv = {"OMPI_ALLOW_RUN_AS_ROOT=1",
                                          "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"};

// `mpiexec --oversubscribe --bind-to none MPIEXEC_ARGS...` in `scratch`: more ranks than
// cores, none pinned, since the machine is shared with whatever else runs.
Outcome RunMpiexec(const fs::path& scratch, const std::vector<std::string>& mpiexec_args,
                   int timeout_seconds = kTimeoutSeconds) {
  std::vector<std::string> command = {kMpiexec, "--oversubscribe", "--bind-to", "none"};
  command.insert(command.end(), mpiexec_args.begin(), mpiexec_args.end());
  return test::RunWithTimeout(scratch, timeout_seconds, command, kMpiEnv);
}

// `epochal ARGS...` on `ranks` ranks, with `transport` (Open MPI flags) before them.
Outcome RunEpochal(const fs::path& scratch, int ranks, const std::vector<std::string>& args,
                   const std::vector<std::string>& transport = {}) {
  std::vector<std::string> mpiexec_args = transport;
  mpiexec_args.insert(mpiexec_args.end(), {"-n", std::to_string(ranks), kBinary});
  mpiexec_args.insert(mpiexec_args.end(), args.begin(), args.end());
  return RunMpiexec(scratch, mpiexec_args);
}

// ---------------------------------------------------------------------------------------
// Reading the run files.

// The JSON object in `text`; fails the test, naming `what`, when it does not parse.
Struct ParseJson(const std::string& text, const std::string& what) {
  Struct s;
  const auto status = google::protobuf::util::JsonStringToMessage(text, &s);
  EXPECT_TRUE(status.ok()) << what << " is not a JSON object: " << status.ToString() << "\n"
                           << text;
  return s;
}

// The field `key` of `object`; a null value when absent (the checks on it then fail).
const Value& Field(const Struct& object, const std::string& key) {
  const auto it = object.fields().find(key);
  return it == object.fields().end() ? Value::default_instance() : it->second;
}

// The elements of the array `key` of `object`; empty when absent or not an array.
std::vector<Value> Array(const Struct& object, const std::string& key) {
  const Value& v = Field(object, key);
  if (!v.has_list_value()) return {};
  return {v.list_value().values().begin(), v.list_value().values().end()};
}

// What rank 0 wrote to history.json in `out`.
struct HistoryFile {
  explicit HistoryFile(const fs::path& out)
      : root(ParseJson(ReadFile(out / "history.json"), (out / "history.json").string())) {}

  int64_t world_size() const {
    return static_cast<int64_t>(std::lround(Field(root, "world_size").number_value()));
  }
  std::vector<Value> epochs() const { return Array(root, "epochs"); }
  std::vector<Value> batches() const { return Array(root, "batches"); }
  std::vector<Value> control_events() const { return Array(root, "control_events"); }

  Struct root;
};

// A tensor of weights.pb: logical dims, row-major values.
struct Tensor {
  std::vector<int64_t> dims;
  std::vector<float> values;
};
// Every tensor of the weights.pb at `path`, by name; fails the test when it does not parse.
std::map<std::string, Tensor> LoadWeights(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  v1::ModelWeights w;
  EXPECT_TRUE(in && w.ParseFromIstream(&in)) << "cannot read " << path;
  std::map<std::string, Tensor> tensors;
  for (const v1::NamedTensor& t : w.tensors()) {
    tensors[t.name()] = {{t.dims().begin(), t.dims().end()},
                         {t.values().begin(), t.values().end()}};
  }
  return tensors;
}

// max |a - b| / max |a|, or max |a - b| where a is all zeros; infinity when the shapes
// differ.
double RelativeDifference(const Tensor& a, const Tensor& b) {
  if (a.dims != b.dims || a.values.size() != b.values.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.values.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a.values[i]) - b.values[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(a.values[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

size_t CountOccurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// ---------------------------------------------------------------------------------------

// A fresh temporary directory; each run gets a subdirectory for its output and captured
// streams. Skips when the real dataset is not installed.
class MpiTrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(fs::path(kDataDir) / "train-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "Fashion-MNIST not installed in " << kDataDir;
    }
  }

  // A new directory `name` under the temporary one.
  fs::path Dir(const std::string& name) const {
    const fs::path dir = tmp_.path() / name;
    fs::create_directories(dir);
    return dir;
  }

  // The flags every training run shares: small, single-threaded, seeded.
  static std::vector<std::string> TrainArgs(const fs::path& out, const std::string& data_dir,
                                            const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"train", "--config", ConfigPath().string(), "--data-dir",
                                     data_dir};
    args.insert(args.end(),
                {"--out", out.string(), "--threads", "1", "--limit-val", "100", "--seed", "3"});
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }

  // `epochal train` on `ranks` ranks of the real data with output in Dir(name)/out;
  // `extra` adds or overrides flags. Fails the test unless the run succeeds. Returns
  // the output directory.
  fs::path Train(const std::string& name, int ranks, const std::vector<std::string>& extra,
                 const std::vector<std::string>& transport = {}, Outcome* outcome = nullptr) {
    const fs::path dir = Dir(name);
    const Outcome o = RunEpochal(dir, ranks, TrainArgs(dir / "out", kDataDir, extra), transport);
    EXPECT_TRUE(o.Succeeded()) << name << " on " << ranks << " ranks: " << o.Describe();
    if (outcome != nullptr) *outcome = o;
    return dir / "out";
  }

  TempDir tmp_{"epochal_mpi_train_test"};
};

// ---------------------------------------------------------------------------------------
// Equivalence.

// After one step. Training here is chaotic: a 1e-5 difference after step 1 grows to 1e-2
// by step 5 and to O(1) by step 20, even between two runs that both use synchronized
// batch norm (2 and 4 ranks), so later weights cannot tell synchronized from
// unsynchronized statistics. After one step, two such runs agree within 2e-5 (a conv
// bias, whose gradient cancels almost exactly behind batch norm), unsynchronized ones
// differ by O(1): 1e-4 leaves room on both sides.
constexpr char kEquivalenceSteps[] = "1";
constexpr double kEquivalenceTolerance = 1e-4;

// With --sync-batch-norm one rank runs the same synchronized path (double-precision
// statistics) as N ranks; oneDNN's own float statistics would move some gradients of this
// step by up to 3e-2 relative, as much as merely reordering the batch does.
TEST_F(MpiTrainTest, SyncBatchNormTwoRanksEqualOneRank) {
  const std::vector<std::string> common = {"--limit-train",   "640",      "--stop-after-steps",
                                           kEquivalenceSteps, "--epochs", "1"};
  auto with = [&common](std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  const fs::path one = Train("one", 1, with({"--batch-size", "32", "--sync-batch-norm"}));
  const fs::path two = Train("two", 2, with({"--batch-size", "16", "--sync-batch-norm"}));
  const fs::path unsynced = Train("unsynced", 2, with({"--batch-size", "16"}));
  ASSERT_FALSE(HasFailure());

  const auto reference = LoadWeights(one / "weights.pb");
  const auto synced = LoadWeights(two / "weights.pb");
  const auto apart = LoadWeights(unsynced / "weights.pb");
  ASSERT_FALSE(reference.empty());
  ASSERT_EQ(synced.size(), reference.size());
  ASSERT_EQ(apart.size(), reference.size());
  for (const char* name : {"bn1_1/moving_mean", "bn1_1/moving_variance", "conv1_1/kernel"}) {
    EXPECT_TRUE(reference.contains(name)) << name << " not in weights.pb; names changed?";
  }

  double most_apart = 0;
  std::string most_apart_name;
  for (const auto& [name, tensor] : reference) {
    ASSERT_TRUE(synced.contains(name)) << name;
    ASSERT_TRUE(apart.contains(name)) << name;
    EXPECT_LE(RelativeDifference(tensor, synced.at(name)), kEquivalenceTolerance)
        << name << ": 2 ranks with synchronized batch norm differ from 1 rank";
    const double d = RelativeDifference(tensor, apart.at(name));
    if (d > most_apart) most_apart = d, most_apart_name = name;
  }
  // The control: per-rank batch statistics (over 16 samples instead of 32) must show, or
  // the comparison above could not fail.
  EXPECT_GT(most_apart, kEquivalenceTolerance)
      << "2 ranks without --sync-batch-norm match 1 rank; the equivalence check above "
         "proves nothing";
  RecordProperty("unsynced_max_relative_difference", std::to_string(most_apart));
  RecordProperty("unsynced_most_different_tensor", most_apart_name);
}

// ---------------------------------------------------------------------------------------
// Validation.

// Validation and the loss-gap decomposition of the same weights: the probe's mini-batches
// are cut the same way for any rank count and each is evaluated whole by one rank.
TEST_F(MpiTrainTest, ValidationAndDecompositionDoNotDependOnRankCount) {
  const fs::path out =
      Train("train", 1, {"--limit-train", "320", "--batch-size", "32", "--epochs", "1"});
  ASSERT_FALSE(HasFailure());
  const fs::path weights = out / "weights.pb";

  double loss = NAN, accuracy = NAN;
  const char* const terms[] = {"probe_train_loss", "probe_eval_loss", "gap_regularization",
                               "gap_data"};
  std::map<std::string, double> single;
  for (int ranks : {1, 2, 4}) {
    SCOPED_TRACE(std::to_string(ranks) + " ranks");
    const fs::path dir = Dir("evaluate" + std::to_string(ranks));
    const Outcome o = RunEpochal(dir, ranks,
                                 {"evaluate", "--config", ConfigPath().string(), "--data-dir",
                                  kDataDir, "--weights", weights.string(), "--limit-val", "1000",
                                  "--threads", "1", "--json", "--probe", "--limit-train", "2000"});
    ASSERT_TRUE(o.Succeeded()) << o.Describe();
    // Rank 0 prints one JSON line; nothing else goes to stdout with --json.
    const size_t begin = o.out.find('{');
    ASSERT_NE(begin, std::string::npos) << o.out;
    EXPECT_EQ(CountOccurrences(o.out, "\"val_loss\""), 1u) << "only rank 0 prints:\n" << o.out;
    const Struct result =
        ParseJson(o.out.substr(begin, o.out.find('\n', begin) - begin), "evaluate --json output");
    EXPECT_EQ(Field(result, "samples").number_value(), 1000.0) << o.out;
    EXPECT_EQ(Field(result, "ranks").number_value(), static_cast<double>(ranks)) << o.out;
    EXPECT_EQ(Field(result, "probe_samples").number_value(), 2000.0) << o.out;
    for (const char* term : terms) {
      const double v = Field(result, term).number_value();
      EXPECT_TRUE(std::isfinite(v)) << term << ": " << o.out;
      if (ranks == 1) {
        single[term] = v;
      } else {
        EXPECT_NEAR(v, single[term], 1e-6) << term << ": " << o.out;
      }
    }
    const double l = Field(result, "val_loss").number_value();
    const double a = Field(result, "val_accuracy").number_value();
    EXPECT_TRUE(std::isfinite(l) && l > 0) << o.out;
    if (ranks == 1) {
      loss = l, accuracy = a;
    } else {
      EXPECT_NEAR(l, loss, 1e-6) << o.out;
      EXPECT_NEAR(a, accuracy, 1e-6) << o.out;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Replica consistency.

// Checks the 2-epoch run in `out` on `ranks` ranks, which printed `o`: history.json records
// every rank's replica hash after every epoch, all equal, and every rank's timings.
void ExpectReplicasIdentical(const fs::path& out, int ranks, const Outcome& o) {
  EXPECT_FALSE(Contains(o.err, "differ from rank 0")) << o.err;
  const HistoryFile history(out);
  EXPECT_EQ(history.world_size(), ranks);
  const std::vector<Value> epochs = history.epochs();
  ASSERT_EQ(epochs.size(), 2u);
  for (size_t e = 0; e < epochs.size(); ++e) {
    SCOPED_TRACE("epoch " + std::to_string(e + 1));
    const Struct& epoch = epochs[e].struct_value();
    const std::vector<Value> hashes = Array(epoch, "replica_hashes");
    ASSERT_EQ(hashes.size(), static_cast<size_t>(ranks));
    EXPECT_EQ(hashes[0].string_value().size(), 16u) << hashes[0].string_value();
    for (const Value& h : hashes) EXPECT_EQ(h.string_value(), hashes[0].string_value());
    const std::vector<Value> timings = Array(epoch, "rank_timings");
    ASSERT_EQ(timings.size(), static_cast<size_t>(ranks));
    for (size_t r = 0; r < timings.size(); ++r) {
      EXPECT_GT(Field(timings[r].struct_value(), "step_ms").number_value(), 0.0) << "rank " << r;
    }
  }
}

class ReplicaTest : public MpiTrainTest, public ::testing::WithParamInterface<int> {};

TEST_P(ReplicaTest, ReplicasStayIdentical) {
  const int ranks = GetParam();
  Outcome o;
  const fs::path out =
      Train("run", ranks, {"--epochs", "2", "--limit-train", "256", "--batch-size", "16"}, {}, &o);
  ASSERT_FALSE(HasFailure());
  ExpectReplicasIdentical(out, ranks, o);
}

INSTANTIATE_TEST_SUITE_P(Ranks, ReplicaTest, ::testing::Values(2, 4),
                         [](const ::testing::TestParamInfo<int>& param_info) {
                           return std::to_string(param_info.param) + "Ranks";
                         });

// --allreduce-precision bf16 end to end on 2 ranks: training finishes with finite losses
// and the replicas stay identical (every rank widens the same bf16 sums). Training here is
// chaotic (kEquivalenceSteps above: a 1e-5 difference grows to O(1) in 20 steps), so the
// weights are compared with f32's after one step only: they must differ (the bf16 wire
// was used) and only by rounding. After one step w = w0 - lr g, so a tensor moves by lr
// times the gradient's error; relative to a tensor that started at zero (biases, betas)
// that is the gradient's own relative error, at most about 2 u = 2^-7 of sum |g_r| per
// element, up to several times more where the two ranks' gradients cancel.
TEST_F(MpiTrainTest, Bf16AllreduceTrainsAndKeepsReplicasIdentical) {
  const std::vector<std::string> args = {"--epochs",     "2",  "--limit-train",         "128",
                                         "--batch-size", "16", "--allreduce-precision", "bf16"};
  Outcome o;
  const fs::path out = Train("bf16", 2, args, {}, &o);
  ASSERT_FALSE(HasFailure());
  ExpectReplicasIdentical(out, 2, o);
  EXPECT_TRUE(Contains(ReadFile(out / "config.textproto"), "allreduce_precision: \"bf16\""));
  const HistoryFile history(out);
  ASSERT_EQ(history.epochs().size(), 2u);
  for (const Value& epoch : history.epochs()) {
    EXPECT_TRUE(std::isfinite(Field(epoch.struct_value(), "loss").number_value()));
    EXPECT_TRUE(std::isfinite(Field(epoch.struct_value(), "val_loss").number_value()));
  }

  const std::vector<std::string> one_step = {"--epochs",     "1",  "--limit-train",      "128",
                                             "--batch-size", "16", "--stop-after-steps", "1"};
  std::vector<std::string> one_step_bf16 = one_step;
  one_step_bf16.insert(one_step_bf16.end(), {"--allreduce-precision", "bf16"});
  const fs::path f32 = Train("f32_step", 2, one_step);
  const fs::path bf16 = Train("bf16_step", 2, one_step_bf16);
  ASSERT_FALSE(HasFailure());
  const std::map<std::string, Tensor> a = LoadWeights(f32 / "weights.pb");
  const std::map<std::string, Tensor> b = LoadWeights(bf16 / "weights.pb");
  ASSERT_EQ(a.size(), b.size());
  double largest = 0;
  std::string where;
  for (const auto& [name, tensor] : a) {
    ASSERT_TRUE(b.contains(name)) << name;
    const double d = RelativeDifference(tensor, b.at(name));
    if (d > largest) largest = d, where = name;
  }
  EXPECT_GT(largest, 0.0) << "bf16 and f32 all-reduces took the same step bit for bit";
  // Measured: 4.2e-3 (conv2_2/bias), against 2^-8 = 3.9e-3 for one rounding.
  EXPECT_LT(largest, 0.02) << where << " moved this far after one step";
  RecordProperty("bf16_one_step_max_relative_difference", std::to_string(largest));
  RecordProperty("bf16_one_step_most_different_tensor", where);
}

// --precision auto is one decision for the job: every rank times the model (where oneDNN
// dispatches native bf16) and all decide on the mean, so they build the same model. Rank
// 0 says once what it chose and why. Where the probe runs, a rank that skipped its
// all-reduce, or called it twice, would hang the job (the run's timeout fails it).
TEST_F(MpiTrainTest, AutoPrecisionIsOneChoiceForTheWholeJob) {
  Outcome o;
  const fs::path out =
      Train("auto", 2,
            {"--epochs", "2", "--limit-train", "64", "--batch-size", "16", "--precision", "auto"},
            {}, &o);
  ASSERT_FALSE(HasFailure());
  ExpectReplicasIdentical(out, 2, o);
  const std::string log = o.out + o.err;
  size_t lines = 0;
  std::string choice;
  for (size_t at = log.find("precision auto: "); at != std::string::npos;
       at = log.find("precision auto: ", at + 1)) {
    const std::string line = log.substr(at, log.find('\n', at) - at);
    if (line.find("timing") != std::string::npos) continue;
    ++lines;
    choice = line;
  }
  EXPECT_EQ(lines, 1u) << log;
  RecordProperty("auto_precision", choice);
  // bf16 or f32, with its reason: the ISA, and the measured speedup where there was one.
  EXPECT_TRUE(Contains(choice, "oneDNN dispatches")) << choice;
  if (Contains(choice, "(native bf16)")) {
    EXPECT_TRUE(Contains(choice, "measured")) << choice;
  }
  // history.json keeps the choice and its reason.
  const std::string history = ReadFile(out / "history.json");
  const std::string used = Contains(choice, "auto: bf16") ? "bf16" : "f32";
  EXPECT_TRUE(Contains(history, "\"used\": \"" + used + "\"")) << history.substr(0, 400);
  EXPECT_TRUE(Contains(history, choice.substr(0, 40))) << choice;
}

// Network path.
TEST_F(MpiTrainTest, ReplicasStayIdenticalOverTcp) {
  Outcome o;
  const fs::path out = Train(
      "run", 2, {"--epochs", "2", "--limit-train", "256", "--batch-size", "16"}, kOverTcp, &o);
  ASSERT_FALSE(HasFailure());
  ExpectReplicasIdentical(out, 2, o);
}

// A last global batch smaller than the rank count leaves some ranks without samples. They
// still make every collective of the step: with synchronized batch norm the others wait
// for them in its all-reduces (this hung forever, the idle ranks waiting in the gradient
// all-reduce instead). 26 samples in global batches of 8 on 4 ranks: the last batch of 2
// leaves ranks 2 and 3 empty, in both epochs. The `timeout` of every run turns a hang
// into a failure.
class EmptyShareTest : public MpiTrainTest,
                       public ::testing::WithParamInterface<std::vector<std::string>> {};

TEST_P(EmptyShareTest, EveryRankTakesPartInTheLastBatch) {
  std::vector<std::string> args = {"--epochs", "2", "--limit-train", "26"};
  args.insert(args.end(), GetParam().begin(), GetParam().end());
  Outcome o;
  const fs::path out = Train("run", 4, args, {}, &o);
  ASSERT_FALSE(HasFailure());
  const HistoryFile history(out);
  const std::vector<Value> batches = history.batches();
  ASSERT_EQ(batches.size(), 8u) << "4 steps per epoch, the last one of 2 samples";
  ExpectReplicasIdentical(out, 4, o);
  for (const Value& epoch : history.epochs()) {
    EXPECT_TRUE(std::isfinite(Field(epoch.struct_value(), "loss").number_value()));
  }
}

INSTANTIATE_TEST_SUITE_P(
    LastBatchOfTwo, EmptyShareTest,
    ::testing::Values(std::vector<std::string>{"--batch-size", "2", "--sync-batch-norm"},
                      std::vector<std::string>{"--batch-size", "2"},
                      std::vector<std::string>{"--fixed-global-batch", "--batch-size", "8",
                                               "--sync-batch-norm"}),
    [](const ::testing::TestParamInfo<std::vector<std::string>>& param_info) {
      const auto& a = param_info.param;
      const bool sync = std::find(a.begin(), a.end(), "--sync-batch-norm") != a.end();
      const bool fixed = std::find(a.begin(), a.end(), "--fixed-global-batch") != a.end();
      return std::string(fixed ? "FixedGlobalBatch" : "PerRankBatch") +
             (sync ? "SyncBatchNorm" : "LocalBatchNorm");
    });

// ---------------------------------------------------------------------------------------
// Failure.

// A replica whose weights drift from rank 0's (EPOCHAL_FAULT perturb-weights: rank 1 nudges
// one weight after global step 12, in epoch 2 of 8 steps each) stops the job with an error
// naming the rank, before any checkpoint of the diverged weights is written: at the end of
// epoch 2, or (with step checkpoints) before the checkpoint of step 16. The newest
// checkpoint and weights.pb stay the last good ones.
struct DivergenceCase {
  std::string name;
  std::vector<std::string> flags;
  std::string fault;
  std::string when;  // What the error names.
  // What stays in checkpoints/, without the run id: ckpt-<run id>-<step>-<a|b>.epck.
  std::string newest_checkpoint;
};

std::ostream& operator<<(std::ostream& os, const DivergenceCase& c) { return os << c.name; }

class DivergenceTest : public MpiTrainTest, public ::testing::WithParamInterface<DivergenceCase> {};

TEST_P(DivergenceTest, DivergedReplicaStopsTheJobAndKeepsTheLastGoodCheckpoint) {
  const DivergenceCase& c = GetParam();
  const fs::path dir = Dir("run");
  std::vector<std::string> train = TrainArgs(
      dir / "out", kDataDir, {"--epochs", "3", "--limit-train", "256", "--batch-size", "16"});
  train.insert(train.end(), c.flags.begin(), c.flags.end());
  std::vector<std::string> command = {kMpiexec, "--oversubscribe", "--bind-to", "none", "-n", "2",
                                      kBinary};
  command.insert(command.end(), train.begin(), train.end());
  std::vector<std::string> env = kMpiEnv;
  env.push_back("EPOCHAL_FAULT=" + c.fault);
  const Outcome o = test::RunWithTimeout(dir, kTimeoutSeconds, command, env);
  EXPECT_TRUE(o.exited && o.code != 0 && o.code != 124) << o.Describe();
  EXPECT_TRUE(Contains(o.err, "replicas diverged " + c.when + ": rank 1's weights (hash "))
      << o.err;
  std::vector<std::string> checkpoints;
  for (const auto& e : fs::directory_iterator(dir / "out" / "checkpoints")) {
    const std::string name = e.path().filename().string();
    // ckpt-<8 hex digits of run id>-<step>-<a|b>.epck: compared without the run id.
    if (name.starts_with("ckpt-") && name.size() > 14) {
      checkpoints.push_back("ckpt-" + name.substr(14));
    }
  }
  std::sort(checkpoints.begin(), checkpoints.end());
  ASSERT_FALSE(checkpoints.empty());
  EXPECT_EQ(checkpoints.back(), c.newest_checkpoint);
  EXPECT_TRUE(fs::exists(dir / "out" / "weights.pb")) << "epoch 1's weights";
}

INSTANTIATE_TEST_SUITE_P(PerturbedRankOne, DivergenceTest,
                         ::testing::Values(DivergenceCase{"AtEpochEnd",
                                                          {},
                                                          "perturb-weights=1:12",
                                                          "at the end of epoch 2",
                                                          "ckpt-0000000008-b.epck"},
                                           DivergenceCase{"BeforeStepCheckpoint",
                                                          {"--checkpoint-every-steps", "4"},
                                                          "perturb-weights=1:13",
                                                          "before the checkpoint at global step 16",
                                                          "ckpt-0000000012-a.epck"}),
                         [](const ::testing::TestParamInfo<DivergenceCase>& param_info) {
                           return param_info.param.name;
                         });

class BadRankTest : public MpiTrainTest, public ::testing::WithParamInterface<int> {};

TEST_P(BadRankTest, UnreadableFileOnOneRankEndsEveryRank) {
  const int bad_rank = GetParam();
  // The bad data directory: the real files, but for training images with a bad magic.
  const fs::path bad_dir = Dir("bad_data");
  for (const char* name :
       {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    fs::create_symlink(fs::path(kDataDir) / name, bad_dir / name);
  }
  const fs::path bad_file = bad_dir / "train-images-idx3-ubyte.gz";
  std::ofstream(bad_file, std::ios::binary) << "PK\x03\x04 not an IDX file at all";

  // MPMD: one rank per program, the bad directory given to rank `bad_rank` only.
  const fs::path dir = Dir("run");
  std::vector<std::string> mpiexec_args;
  for (int rank = 0; rank < 2; ++rank) {
    if (rank > 0) mpiexec_args.push_back(":");
    const std::vector<std::string> args =
        TrainArgs(dir / "out", rank == bad_rank ? bad_dir.string() : kDataDir,
                  {"--epochs", "1", "--limit-train", "64"});
    mpiexec_args.insert(mpiexec_args.end(), {"-n", "1", kBinary});
    mpiexec_args.insert(mpiexec_args.end(), args.begin(), args.end());
  }
  const Outcome o = RunMpiexec(dir, mpiexec_args, 60);

  EXPECT_TRUE(o.exited && o.code != 0 && o.code != 124 && o.code != 137)
      << "expected a non-zero exit, got " << o.Describe();
  // Not a benchmark: a bound on "promptly", where a hang would take the full timeout.
  EXPECT_LT(o.seconds, 10.0) << "every rank should end promptly; " << o.Describe();
  EXPECT_EQ(CountOccurrences(o.err, bad_file.string()), 1u)
      << "the bad file should be named exactly once:\n"
      << o.err;
  EXPECT_TRUE(Contains(o.err, "epochal train: error: rank " + std::to_string(bad_rank) + ": "))
      << o.err;
  EXPECT_FALSE(Contains(o.err, "finished after global step")) << o.err;
  EXPECT_FALSE(fs::exists(dir / "out" / "weights.pb")) << "a failed run left weights behind";
  RecordProperty("seconds", std::to_string(o.seconds));
}

INSTANTIATE_TEST_SUITE_P(Ranks, BadRankTest, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int>& param_info) {
                           return "BadRank" + std::to_string(param_info.param);
                         });

// ---------------------------------------------------------------------------------------
// Control word.

TEST_F(MpiTrainTest, StopControlWordEndsAllRanksAtTheSameStep) {
  Outcome o;
  const fs::path out = Train(
      "run", 2,
      {"--stop-after-steps", "7", "--epochs", "3", "--limit-train", "640", "--batch-size", "16"},
      {}, &o);
  ASSERT_FALSE(HasFailure());
  const HistoryFile history(out);
  EXPECT_EQ(history.batches().size(), 7u);
  // The stop came in epoch 1 of 3, whose evaluation belongs to a resumed run.
  EXPECT_EQ(history.epochs().size(), 0u);
  for (int rank : {0, 1}) {
    EXPECT_TRUE(Contains(o.err, "rank " + std::to_string(rank) +
                                    ": finished after global step 7 (stopped by control word)"))
        << o.err;
  }
  bool stop_at_8 = false;
  for (const Value& event : history.control_events()) {
    const Struct& e = event.struct_value();
    stop_at_8 = stop_at_8 || (Field(e, "action").string_value() == "stop" &&
                              Field(e, "step").number_value() == 8.0);
  }
  EXPECT_TRUE(stop_at_8) << ReadFile(out / "history.json");
}

// ---------------------------------------------------------------------------------------
// Global batch sizing.

TEST_F(MpiTrainTest, FixedGlobalBatchSharesTheBatchBetweenRanks) {
  // 320 samples in global batches of 32: 10 steps, whether --batch-size 32 is global or
  // --batch-size 16 is per rank.
  const std::vector<std::string> common = {"--limit-train", "320", "--epochs", "1"};
  auto with = [&common](std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  const fs::path fixed = Train("fixed", 2, with({"--fixed-global-batch", "--batch-size", "32"}));
  const fs::path per_rank = Train("per_rank", 2, with({"--batch-size", "16"}));
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(HistoryFile(fixed).batches().size(), 10u);
  EXPECT_EQ(HistoryFile(per_rank).batches().size(), 10u);
}

}  // namespace
}  // namespace epochal::apps
