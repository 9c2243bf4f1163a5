// End-to-end fault tolerance of `mpiexec -n 2 epochal train`: runs killed with SIGKILL at
// seeded points (mid-epoch, on a checkpoint step, half-way through writing a checkpoint,
// during validation), a corrupt newest checkpoint, a SIGTERM, and a NaN in one rank's
// gradient. After each interruption `--resume auto` continues, and the final weights,
// running statistics and optimizer state (SHA-256 over the last checkpoint) and
// history.json (timing fields aside) must be bitwise identical to an uninterrupted run
// with the same rank and thread count.
//
// Runs are tiny (640 training and 200 validation samples, 3 epochs of 10 global steps,
// --threads 1) and the faults come from EPOCHAL_FAULT (src/train/fault_plan.h), so every
// kill lands at an exact, reproducible point.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "epochal/train/checkpoint.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "process_util.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Struct;
using test::Contains;
using test::Outcome;
using test::TempDir;

constexpr char kBinary[] = EPOCHAL_BINARY;
constexpr char kMpiexec[] = EPOCHAL_MPIEXEC;
constexpr char kSourceDir[] = EPOCHAL_SOURCE_DIR;
constexpr char kDataDir[] = "/usr/share/datasets/fashion-mnist";
constexpr int kTimeoutSeconds = 240;
constexpr int kStepsPerEpoch = 10;  // 640 samples, 2 ranks x 32.
constexpr int kEpochs = 3;

#define REQUIRE_FASHION_MNIST()                                       \
  if (!fs::exists(fs::path(kDataDir) / "train-images-idx3-ubyte.gz")) \
  GTEST_SKIP() << "dataset-fashion-mnist is not installed"

// The MiniVGGNet config with a 128-sample probe (the default, all 640 training samples,
// would double the cost of each epoch's analysis).
std::string ConfigPath() {
  static TempDir* dir = new TempDir("epochal_resume_config");
  const fs::path path = dir->path() / "config.textproto";
  if (!fs::exists(path)) {
    std::ofstream(path) << test::ReadFile(fs::path(kSourceDir) /
                                          "configs/fashion_mnist_minivggnet.textproto")
                        << "\nanalysis { probe_samples: 128 }\n";
  }
  return path.string();
}

// `mpiexec -n 2 epochal train ...` into `out`, with EPOCHAL_FAULT=`fault` when not empty.
Outcome Train(const fs::path& out, const std::string& fault,
              const std::vector<std::string>& extra = {}) {
  std::vector<std::string> command = {kMpiexec,
                                      "--oversubscribe",
                                      "--bind-to",
                                      "none",
                                      "-n",
                                      "2",
                                      kBinary,
                                      "train",
                                      "--config",
                                      ConfigPath(),
                                      "--data-dir",
                                      kDataDir,
                                      "--limit-train",
                                      "640",
                                      "--limit-val",
                                      "200",
                                      "--epochs",
                                      std::to_string(kEpochs),
                                      "--batch-size",
                                      "32",
                                      "--threads",
                                      "1",
                                      "--no-scan",
                                      "--checkpoint-every-steps",
                                      "4",
                                      "--out",
                                      out.string()};
  command.insert(command.end(), extra.begin(), extra.end());
  std::vector<std::string> env = {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
                                  "EPOCHAL_FAULT=" + fault};
  return test::RunWithTimeout(out.parent_path(), kTimeoutSeconds, command, env);
}

// history.json without the fields that measure the machine rather than the model
// (seconds, images_per_second, rank_timings, validation_seconds, probe_seconds) and, if asked,
// without control events.
Struct Normalized(const fs::path& history_json, bool drop_control_events) {
  Struct root;
  const auto status =
      google::protobuf::util::JsonStringToMessage(test::ReadFile(history_json), &root);
  EXPECT_TRUE(status.ok()) << history_json << ": " << status.ToString();
  auto& epochs = *(*root.mutable_fields())["epochs"].mutable_list_value();
  for (auto& e : *epochs.mutable_values()) {
    auto& f = *e.mutable_struct_value()->mutable_fields();
    f.erase("seconds");
    f.erase("images_per_second");
    f.erase("rank_timings");
    f.erase("validation_seconds");
    f.erase("probe_seconds");
  }
  if (drop_control_events) root.mutable_fields()->erase("control_events");
  return root;
}

// Empty when equal (maps compared by key), else the differences.
std::string Differences(const Struct& a, const Struct& b) {
  google::protobuf::util::MessageDifferencer differ;
  std::string report;
  differ.ReportDifferencesToString(&report);
  return differ.Compare(a, b) ? std::string() : report.substr(0, 4000);
}

struct RunResult {
  std::string digest;  // StateDigest of the final checkpoint.
  Struct history;      // Normalized history.json.
  int64_t final_step = 0;
};

RunResult Finish(const fs::path& out, bool drop_control_events) {
  RunResult r;
  auto found = train::FindLatestCheckpoint(out / "checkpoints", {});
  EXPECT_TRUE(found);
  if (!found) return r;
  r.digest = train::StateDigest(found->checkpoint);
  EXPECT_EQ(r.digest, found->checkpoint.state_sha256());
  r.final_step = found->checkpoint.position().global_step();
  r.history = Normalized(out / "history.json", drop_control_events);
  return r;
}

// One uninterrupted run, shared by the tests of this process.
const RunResult& Reference(bool drop_control_events) {
  static TempDir* dir = new TempDir("epochal_reference");
  static RunResult with, without;
  if (with.digest.empty()) {
    fs::create_directories(dir->path() / "run");
    const Outcome o = Train(dir->path() / "run", "");
    EXPECT_TRUE(o.Succeeded()) << o.Describe();
    with = Finish(dir->path() / "run", false);
    without = Finish(dir->path() / "run", true);
    EXPECT_EQ(with.final_step, kEpochs * kStepsPerEpoch);
  }
  return drop_control_events ? without : with;
}

bool HasTemporaries(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (Contains(e.path().filename().string(), ".tmp.")) return true;
  }
  return false;
}

TEST(ResumeTest, KilledFiveTimesThenResumedIsBitwiseIdentical) {
  REQUIRE_FASHION_MNIST();
  const RunResult& reference = Reference(false);
  TempDir dir("epochal_kill");
  const fs::path out = dir.path() / "run";
  fs::create_directories(out);
  // Seeded kill points, in the order the run meets them.
  std::mt19937 rng(20261129);
  const int mid_epoch1 = 5 + static_cast<int>(rng() % 5);  // 5..9, after the step-4 checkpoint
  const int mid_epoch3 = 2 * kStepsPerEpoch + 1 + static_cast<int>(rng() % 4);  // 21..24
  const int late_epoch3 = mid_epoch3 + 1 + static_cast<int>(rng() % 4);         // ..28
  const std::vector<std::string> faults = {
      "kill-after-step=" + std::to_string(mid_epoch1),
      "kill-in-checkpoint-write=1",  // Half-way through the resumed run's first write.
      "kill-in-validation=2", "kill-after-step=" + std::to_string(mid_epoch3),
      "kill-after-step=" + std::to_string(late_epoch3)};
  for (size_t i = 0; i < faults.size(); ++i) {
    if (i == 4) {
      // Corrupt the newest checkpoint: resume must say so and take the one before.
      const auto candidates = train::CheckpointCandidates(out / "checkpoints");
      ASSERT_FALSE(candidates.empty());
      std::string bytes = test::ReadFile(candidates.front());
      bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x5a);
      std::ofstream(candidates.front(), std::ios::binary | std::ios::trunc) << bytes;
      const Outcome o = Train(out, faults[i], {"--resume", "auto"});
      EXPECT_FALSE(o.Succeeded()) << faults[i] << " did not stop the run";
      EXPECT_TRUE(Contains(o.out + o.err, candidates.front().filename().string()))
          << "no warning names the corrupt checkpoint:\n"
          << o.out << o.err;
      continue;
    }
    const Outcome o =
        Train(out, faults[i],
              i == 0 ? std::vector<std::string>{} : std::vector<std::string>{"--resume", "auto"});
    EXPECT_FALSE(o.Succeeded()) << faults[i] << " did not stop the run:\n" << o.out;
    if (i > 0) {
      EXPECT_TRUE(Contains(o.out, "resuming from")) << o.out << o.err;
    }
  }
  const Outcome last = Train(out, "", {"--resume", "auto"});
  ASSERT_TRUE(last.Succeeded()) << last.Describe();
  EXPECT_FALSE(HasTemporaries(out / "checkpoints"));
  const RunResult resumed = Finish(out, false);
  EXPECT_EQ(resumed.final_step, reference.final_step);
  EXPECT_EQ(resumed.digest, reference.digest);
  EXPECT_EQ(Differences(resumed.history, reference.history), "");
}

TEST(ResumeTest, SigtermCheckpointsExitsZeroAndResumesExactly) {
  REQUIRE_FASHION_MNIST();
  const RunResult& reference = Reference(true);
  TempDir dir("epochal_term");
  const fs::path out = dir.path() / "run";
  fs::create_directories(out);
  // Both ranks get SIGTERM after step 13 (as srun or mpirun forward it); rank 0 stops
  // every rank after the next step, with a checkpoint.
  const Outcome stopped = Train(out, "term-after-step=13");
  ASSERT_TRUE(stopped.Succeeded()) << stopped.Describe();
  EXPECT_TRUE(Contains(stopped.out, "stopped on signal 15 after global step 14")) << stopped.out;
  const v1::Checkpoint at_stop =
      train::ReadCheckpointFile(out / "checkpoints" / "ckpt-0000000014-a.epck");
  EXPECT_EQ(at_stop.reason(), "stop");
  const Outcome resumed = Train(out, "", {"--resume", "auto"});
  ASSERT_TRUE(resumed.Succeeded()) << resumed.Describe();
  EXPECT_TRUE(Contains(resumed.out, "ckpt-0000000014-a.epck")) << resumed.out;
  const RunResult r = Finish(out, true);
  EXPECT_EQ(r.digest, reference.digest);
  EXPECT_EQ(Differences(r.history, reference.history), "");
  EXPECT_TRUE(Contains(test::ReadFile(out / "history.json"), "\"stop\""));
}

TEST(ResumeTest, NanInOneRanksGradientStopsEveryRankAndWritesNoCheckpoint) {
  REQUIRE_FASHION_MNIST();
  TempDir dir("epochal_nan");
  const fs::path out = dir.path() / "run";
  fs::create_directories(out);
  const Outcome o = Train(out, "nan-grad=1:7");
  ASSERT_FALSE(o.Succeeded()) << o.out;
  EXPECT_TRUE(Contains(o.err, "global step 7")) << o.err;
  EXPECT_TRUE(Contains(o.err, "non-finite gradient of")) << o.err;
  // Only the step-4 checkpoint exists, and it is good.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out / "checkpoints")) {
    names.push_back(e.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"ckpt-0000000004-a.epck"});
  const v1::Checkpoint good = train::ReadCheckpointFile(out / "checkpoints" / names.front());
  for (const auto& t : good.weights().tensors()) {
    for (float v : t.values()) ASSERT_TRUE(std::isfinite(v)) << t.name();
  }
  // A resume with a config that breaks exactness is refused, naming the field.
  const Outcome refused = Train(out, "", {"--resume", "auto", "--batch-size", "16"});
  EXPECT_EQ(refused.exited ? refused.code : -1, 2) << refused.Describe();
  EXPECT_TRUE(Contains(refused.err, "training.batch_size")) << refused.err;
}

}  // namespace
}  // namespace epochal::apps
