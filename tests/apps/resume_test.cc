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
#include <map>
#include <random>
#include <sstream>
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

// The newest checkpoint in `out`/checkpoints (of the run written last).
fs::path NewestCheckpoint(const fs::path& out) {
  const auto candidates = train::CheckpointCandidates(out / "checkpoints");
  EXPECT_FALSE(candidates.empty()) << out;
  return candidates.empty() ? fs::path() : candidates.front();
}

struct HistoryCounts {
  int epochs = -1, batches = -1;
};

// How many epoch and batch records history.json holds.
HistoryCounts Count(const fs::path& history_json) {
  Struct root;
  const auto status =
      google::protobuf::util::JsonStringToMessage(test::ReadFile(history_json), &root);
  EXPECT_TRUE(status.ok()) << history_json << ": " << status.ToString();
  HistoryCounts c;
  const auto& f = root.fields();
  if (auto it = f.find("epochs"); it != f.end()) c.epochs = it->second.list_value().values_size();
  if (auto it = f.find("batches"); it != f.end()) c.batches = it->second.list_value().values_size();
  return c;
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
  const fs::path stop_file = NewestCheckpoint(out);
  EXPECT_TRUE(stop_file.filename().string().ends_with("-0000000014-a.epck")) << stop_file;
  const v1::Checkpoint at_stop = train::ReadCheckpointFile(stop_file);
  EXPECT_EQ(at_stop.reason(), "stop");
  // The stop neither validated nor probed the partial epoch 2 (issue 14, item 6): the
  // history holds epoch 1 and the 14 steps, and the resumed run evaluates epoch 2.
  const HistoryCounts at_exit = Count(out / "history.json");
  EXPECT_EQ(at_exit.epochs, 1);
  EXPECT_EQ(at_exit.batches, 14);
  const Outcome resumed = Train(out, "", {"--resume", "auto"});
  ASSERT_TRUE(resumed.Succeeded()) << resumed.Describe();
  EXPECT_TRUE(Contains(resumed.out, stop_file.filename().string())) << resumed.out;
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
  ASSERT_EQ(names.size(), 1u);
  const v1::Checkpoint good = train::ReadCheckpointFile(out / "checkpoints" / names.front());
  EXPECT_EQ(names.front(), "ckpt-" + good.run_id() + "-0000000004-a.epck");
  for (const auto& t : good.weights().tensors()) {
    for (float v : t.values()) ASSERT_TRUE(std::isfinite(v)) << t.name();
  }
  // A resume with a config that breaks exactness is refused, naming the field.
  const Outcome refused = Train(out, "", {"--resume", "auto", "--batch-size", "16"});
  EXPECT_EQ(refused.exited ? refused.code : -1, 2) << refused.Describe();
  EXPECT_TRUE(Contains(refused.err, "training.batch_size")) << refused.err;
}

// ---------------------------------------------------------------------------------------
// Issue 14, items 1-3 and 6, on one rank (no launcher): 320 training samples, 10 steps of
// 32 per epoch, checkpoints every 4 steps.

constexpr int kSoloStepsPerEpoch = 10;

// `epochal train` in the working directory `cwd` (through `env -C`), output captured in
// `scratch`; the flags every solo run shares, then `extra`.
Outcome TrainSolo(const fs::path& scratch, const fs::path& cwd,
                  const std::vector<std::string>& extra, const std::string& fault = "") {
  std::vector<std::string> command = {"env",
                                      "-C",
                                      cwd.string(),
                                      kBinary,
                                      "train",
                                      "--config",
                                      ConfigPath(),
                                      "--data-dir",
                                      kDataDir,
                                      "--limit-train",
                                      "320",
                                      "--limit-val",
                                      "64",
                                      "--batch-size",
                                      "32",
                                      "--threads",
                                      "1",
                                      "--no-scan",
                                      "--checkpoint-every-steps",
                                      "4"};
  command.insert(command.end(), extra.begin(), extra.end());
  return test::RunWithTimeout(scratch, kTimeoutSeconds, command, {"EPOCHAL_FAULT=" + fault});
}

// The run ids of the checkpoints in `dir`, with how many files each has (best included).
std::map<std::string, int> RunsIn(const fs::path& dir) {
  std::map<std::string, int> runs;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (auto name = train::ParseCheckpointName(e.path().filename().string())) ++runs[name->run_id];
  }
  return runs;
}

// The line after "continue with...:" in `out`, without its indentation, split at spaces.
std::vector<std::string> HintedCommand(const std::string& out) {
  const size_t at = out.find("; continue with:\n  ");
  if (at == std::string::npos) return {};
  const size_t begin = at + std::string("; continue with:\n  ").size();
  const std::string line = out.substr(begin, out.find('\n', begin) - begin);
  std::vector<std::string> words;
  std::istringstream in(line);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

// Item 1: a checkpoint that does not read back after writing ends the run naming it, and
// retention has not yet rotated the previous one away; `--resume auto` over checkpoints of
// which none can be read is an error naming each file, not a fresh start.
TEST(ResumeTest, UnreadableCheckpointsAreAnErrorNotAFreshStart) {
  REQUIRE_FASHION_MNIST();
  TempDir dir("epochal_unreadable");
  const fs::path out = dir.path() / "run";
  // Keep only one checkpoint: had the bad second one counted, the good first would be gone.
  const Outcome bad_write = TrainSolo(
      dir.path(), dir.path(), {"--out", out.string(), "--epochs", "1", "--keep-checkpoints", "1"},
      "corrupt-checkpoint-write=2");
  EXPECT_TRUE(bad_write.exited && bad_write.code == 1) << bad_write.Describe();
  EXPECT_TRUE(Contains(bad_write.err, "-0000000008-a.epck does not read back after writing"))
      << bad_write.err;
  std::vector<fs::path> left;
  for (const auto& e : fs::directory_iterator(out / "checkpoints")) left.push_back(e.path());
  ASSERT_EQ(left.size(), 1u);
  EXPECT_TRUE(left[0].filename().string().ends_with("-0000000004-a.epck")) << left[0];
  EXPECT_NO_THROW(train::ReadCheckpointFile(left[0]));

  // Now spoil that one too: nothing can be resumed, and saying so is an error.
  std::string bytes = test::ReadFile(left[0]);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x5a);
  std::ofstream(left[0], std::ios::binary | std::ios::trunc) << bytes;
  const Outcome resumed = TrainSolo(dir.path(), dir.path(),
                                    {"--out", out.string(), "--epochs", "1", "--resume", "auto"});
  EXPECT_TRUE(resumed.exited && resumed.code == 2) << resumed.Describe();
  EXPECT_TRUE(Contains(resumed.err, "--resume auto: none of the 1 checkpoints in " +
                                        (out / "checkpoints").string() + " can be continued"))
      << resumed.err;
  EXPECT_TRUE(
      Contains(resumed.err,
               left[0].string() + ": not a good checkpoint: payload checksum (CRC32C) mismatch"))
      << resumed.err;
  EXPECT_FALSE(Contains(resumed.out, "starting from the beginning")) << resumed.out;
  EXPECT_FALSE(Contains(resumed.out, "Epoch 1/1")) << resumed.out;
}

// Item 2: a second run in the same --out is refused unless it says --overwrite; with it,
// each run keeps its own last three checkpoints however the step numbers compare, and
// `--resume auto` continues the run whose config it has. A checkpoint from before run ids
// still resumes, bitwise like the run it came from.
TEST(ResumeTest, ReusedOutNeedsOverwriteAndRunsStayApart) {
  REQUIRE_FASHION_MNIST();
  TempDir dir("epochal_reuse");
  const fs::path out = dir.path() / "run";
  const fs::path ckpts = out / "checkpoints";
  const Outcome a = TrainSolo(dir.path(), dir.path(), {"--out", out.string(), "--epochs", "2"});
  ASSERT_TRUE(a.Succeeded()) << a.Describe();
  const std::string a_id = train::ReadCheckpointFile(NewestCheckpoint(out)).run_id();
  ASSERT_EQ(a_id.size(), 8u);
  const std::string a_history = test::ReadFile(out / "history.json");

  const std::vector<std::string> b_flags = {"--out", out.string(), "--lr", "0.02"};
  auto with = [&b_flags](std::vector<std::string> extra) {
    extra.insert(extra.begin(), b_flags.begin(), b_flags.end());
    return extra;
  };
  const Outcome refused = TrainSolo(dir.path(), dir.path(), with({"--epochs", "1"}));
  EXPECT_TRUE(refused.exited && refused.code == 2) << refused.Describe();
  for (const std::string& part : std::vector<std::string>{"--out " + out.string() + " is not empty",
                                                          "--resume auto", "--overwrite"}) {
    EXPECT_TRUE(Contains(refused.err, part)) << part << " not in:\n" << refused.err;
  }
  EXPECT_EQ(test::ReadFile(out / "history.json"), a_history) << "the refused run wrote files";

  const Outcome b = TrainSolo(dir.path(), dir.path(), with({"--epochs", "1", "--overwrite"}));
  ASSERT_TRUE(b.Succeeded()) << b.Describe();
  const fs::path b_end = NewestCheckpoint(out);
  const std::string b_id = train::ReadCheckpointFile(b_end).run_id();
  ASSERT_NE(b_id, a_id);
  EXPECT_EQ(b_end.filename().string(), "ckpt-" + b_id + "-0000000010-b.epck");
  // A: steps 16, 20, 20 (epoch end) and its best; B: 4, 8, 10 (epoch end) and its best.
  EXPECT_EQ(RunsIn(ckpts), (std::map<std::string, int>{{a_id, 4}, {b_id, 4}}));
  EXPECT_NE(test::ReadFile(out / "history.json"), a_history) << "B's history is not in --out";

  // B's config continues B, A's continues A, each saying which run it took.
  const Outcome b_more =
      TrainSolo(dir.path(), dir.path(), with({"--epochs", "2", "--resume", "auto"}));
  ASSERT_TRUE(b_more.Succeeded()) << b_more.Describe();
  EXPECT_TRUE(Contains(b_more.out, "resuming from " + b_end.string() + " (run " + b_id))
      << b_more.out;
  const fs::path b_final = ckpts / ("ckpt-" + b_id + "-0000000020-b.epck");
  EXPECT_TRUE(fs::exists(b_final));
  EXPECT_EQ(RunsIn(ckpts), (std::map<std::string, int>{{a_id, 4}, {b_id, 4}}));
  const Outcome a_again = TrainSolo(dir.path(), dir.path(),
                                    {"--out", out.string(), "--epochs", "2", "--resume", "auto"});
  ASSERT_TRUE(a_again.Succeeded()) << a_again.Describe();
  EXPECT_TRUE(Contains(a_again.out, "-0000000020-b.epck (run " + a_id)) << a_again.out;
  EXPECT_TRUE(Contains(a_again.err, "different config")) << "no word on passing over B:\n"
                                                         << a_again.err;

  // A checkpoint as written before run ids: B's step-16 one with the id cleared, under
  // the old name, in a directory of its own.
  v1::Checkpoint old = train::ReadCheckpointFile(ckpts / ("ckpt-" + b_id + "-0000000016-a.epck"));
  old.set_run_id("");
  const fs::path legacy = dir.path() / "legacy";
  fs::create_directories(legacy / "checkpoints");
  std::ofstream(legacy / "checkpoints" / "ckpt-0000000016-a.epck", std::ios::binary)
      << train::EncodeCheckpoint(old);
  const Outcome from_old =
      TrainSolo(dir.path(), dir.path(),
                {"--out", legacy.string(), "--lr", "0.02", "--epochs", "2", "--resume", "auto"});
  ASSERT_TRUE(from_old.Succeeded()) << from_old.Describe();
  EXPECT_TRUE(Contains(from_old.out, "ckpt-0000000016-a.epck (no run id")) << from_old.out;
  const fs::path old_final = legacy / "checkpoints" / "ckpt-0000000020-b.epck";
  ASSERT_TRUE(fs::exists(old_final)) << "a resumed old run keeps the old names";
  EXPECT_EQ(train::StateDigest(train::ReadCheckpointFile(old_final)),
            train::StateDigest(train::ReadCheckpointFile(b_final)));
}

// Items 3 and 6: a run without --out stopped by SIGTERM exits 0 without evaluating its
// partial epoch and prints the exact command that continues it, --out included;
// following it ends bitwise where an uninterrupted run ends. `--resume auto` without
// --out then finds that run under runs/, and a config with no run there says so.
TEST(ResumeTest, StopHintIsTheCommandThatContinuesAndSkipsEvaluation) {
  REQUIRE_FASHION_MNIST();
  TempDir dir("epochal_hint");
  const fs::path work = dir.path() / "work";
  fs::create_directories(work);
  const Outcome reference = TrainSolo(
      dir.path(), dir.path(), {"--out", (dir.path() / "reference").string(), "--epochs", "2"});
  ASSERT_TRUE(reference.Succeeded()) << reference.Describe();

  const Outcome stopped = TrainSolo(dir.path(), work, {"--epochs", "2"}, "term-after-step=13");
  ASSERT_TRUE(stopped.Succeeded()) << stopped.Describe();
  EXPECT_TRUE(Contains(stopped.out, "stopped on signal 15 after global step 14; continue with:"))
      << stopped.out;
  // No validation, probe or report of the partial epoch 2 (item 6).
  EXPECT_FALSE(Contains(stopped.out, "Epoch 2/2 -")) << stopped.out;
  EXPECT_FALSE(Contains(stopped.out, "Classification report")) << stopped.out;
  std::vector<std::string> hint = HintedCommand(stopped.out);
  ASSERT_GE(hint.size(), 6u) << stopped.out;
  EXPECT_EQ(hint[0], kBinary);
  EXPECT_EQ(std::vector<std::string>(hint.end() - 4, hint.end())[0], "--out");
  const std::string run_dir = hint[hint.size() - 3];
  EXPECT_TRUE(run_dir.starts_with("runs/")) << run_dir;
  EXPECT_EQ(hint[hint.size() - 2], "--resume");
  EXPECT_EQ(hint.back(), "auto");
  EXPECT_NE(std::find(hint.begin(), hint.end(), ConfigPath()), hint.end()) << "no --config";
  const HistoryCounts at_stop = Count(work / run_dir / "history.json");
  EXPECT_EQ(at_stop.epochs, 1);
  EXPECT_EQ(at_stop.batches, 14);
  EXPECT_FALSE(fs::exists(work / run_dir / "report.txt"));
  EXPECT_TRUE(fs::exists(work / run_dir / "weights.pb"));

  // Follow the hint, word for word, in the same working directory.
  std::vector<std::string> follow = {"env", "-C", work.string()};
  follow.insert(follow.end(), hint.begin(), hint.end());
  const Outcome continued = test::RunWithTimeout(dir.path(), kTimeoutSeconds, follow);
  ASSERT_TRUE(continued.Succeeded()) << continued.Describe();
  EXPECT_TRUE(Contains(continued.out, "-0000000014-a.epck (run ")) << continued.out;
  const RunResult want = Finish(dir.path() / "reference", true);
  const RunResult got = Finish(work / run_dir, true);
  EXPECT_EQ(got.final_step, 2 * kSoloStepsPerEpoch);
  EXPECT_EQ(got.digest, want.digest);
  EXPECT_EQ(Differences(got.history, want.history), "");

  // Without --out: the newest run of this config under runs/ ...
  const Outcome found = TrainSolo(dir.path(), work, {"--epochs", "2", "--resume", "auto"});
  ASSERT_TRUE(found.Succeeded()) << found.Describe();
  EXPECT_TRUE(Contains(found.out, "--resume auto without --out: continuing " + run_dir))
      << found.out;
  EXPECT_TRUE(Contains(found.out, "resuming from " + run_dir + "/checkpoints/")) << found.out;
  // ... and for another config there is none.
  const Outcome none =
      TrainSolo(dir.path(), work,
                {"--epochs", "1", "--lr", "0.02", "--resume", "auto", "--stop-after-steps", "1"});
  ASSERT_TRUE(none.Succeeded()) << none.Describe();
  EXPECT_TRUE(Contains(none.out,
                       "--resume auto without --out: no run of this config with "
                       "checkpoints under runs/, starting a new run in runs/"))
      << none.out;
}

// Item 6, through a stop control word (what `ctl stop` and --stop-after-steps send):
// checkpoint, history, exit 0, and no evaluation of the partial epoch.
TEST(ResumeTest, StopControlWordSkipsThePartialEpochsEvaluation) {
  REQUIRE_FASHION_MNIST();
  TempDir dir("epochal_stopword");
  const fs::path out = dir.path() / "run";
  const Outcome o = TrainSolo(dir.path(), dir.path(),
                              {"--out", out.string(), "--epochs", "2", "--stop-after-steps", "6"});
  ASSERT_TRUE(o.Succeeded()) << o.Describe();
  EXPECT_TRUE(Contains(o.out, "stopped by a stop control word after global step 6; continue with:"))
      << o.out;
  EXPECT_FALSE(Contains(o.out, "val_loss")) << o.out;
  const HistoryCounts h = Count(out / "history.json");
  EXPECT_EQ(h.epochs, 0);
  EXPECT_EQ(h.batches, 6);
  EXPECT_TRUE(Contains(test::ReadFile(out / "history.json"), "\"stop\""));
  const v1::Checkpoint at_stop = train::ReadCheckpointFile(NewestCheckpoint(out));
  EXPECT_EQ(at_stop.reason(), "stop");
  EXPECT_EQ(at_stop.position().global_step(), 6);
  const std::vector<std::string> hint = HintedCommand(o.out);
  EXPECT_EQ(std::find(hint.begin(), hint.end(), "--stop-after-steps"), hint.end())
      << "the hint would stop again";
}

}  // namespace
}  // namespace epochal::apps
