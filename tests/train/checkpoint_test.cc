// The checkpoint container, its writer and store: checksums, corruption and truncation
// detection over many seeds, fallback to an older checkpoint, retention, config
// compatibility, and the errors a full or read-only disk gives.
#include "epochal/train/checkpoint.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "../report/temp_dir.h"
#include "epochal/core/checksum.h"
#include "epochal/train/config.h"
#include "epochal/train/fault_plan.h"

namespace epochal::train {
namespace {

namespace fs = std::filesystem;

using ::epochal::report::testing::TempDir;

using ::epochal::report::testing::ReadFile;

void WriteAll(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

v1::ExperimentConfig Config() {
  return LoadExperimentConfig(std::string(EPOCHAL_SOURCE_DIR) +
                              "/configs/fashion_mnist_minivggnet.textproto");
}

// A checkpoint of realistic shape: a few tensors, optimizer state and history.
v1::Checkpoint Sample(int64_t global_step, bool epoch_end, double val_loss, size_t values = 300) {
  v1::Checkpoint c;
  *c.mutable_config() = Config();
  c.set_world_size(2);
  c.set_reason(epoch_end ? "epoch" : "steps");
  auto* pos = c.mutable_position();
  pos->set_epoch(epoch_end ? 3 : 2);
  pos->set_batches_done(epoch_end ? 0 : 5);
  pos->set_global_step(global_step);
  pos->set_epochs_completed(epoch_end ? 2 : 1);
  pos->set_batches_per_epoch(10);
  for (const char* name : {"conv_0/kernel", "conv_0/bias", "bn_1/moving_mean"}) {
    auto* t = c.mutable_weights()->add_tensors();
    t->set_name(name);
    t->add_dims(static_cast<int64_t>(values));
    for (size_t i = 0; i < values; ++i)
      t->add_values(std::sin(static_cast<float>(i + global_step)));
    *c.mutable_optimizer()->add_velocity() = *t;
  }
  c.mutable_optimizer()->set_iterations(global_step);
  for (int e = 1; e <= pos->epochs_completed(); ++e) {
    auto* r = c.mutable_history()->add_epochs();
    r->set_epoch(e);
    r->set_val_loss(e == pos->epochs_completed() ? val_loss : val_loss + 1);
  }
  c.set_state_sha256(StateDigest(c));
  return c;
}

TEST(ChecksumTest, KnownVectors) {
  EXPECT_EQ(Crc32c("123456789"), 0xe3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Incremental updates in odd pieces give the same digest.
  Sha256 s;
  const std::string text = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  for (size_t i = 0; i < text.size(); i += 7) s.Update(text.substr(i, 7));
  EXPECT_EQ(s.HexDigest(), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(CheckpointTest, RoundTrips) {
  const v1::Checkpoint c = Sample(42, false, 0.5);
  const std::string bytes = EncodeCheckpoint(c);
  ASSERT_EQ(bytes.substr(0, 8), "EPOCHCKP");
  const v1::Checkpoint back = DecodeCheckpoint(bytes, "mem");
  EXPECT_EQ(back.SerializeAsString(), c.SerializeAsString());
  EXPECT_EQ(StateDigest(back), c.state_sha256());
}

TEST(CheckpointTest, EveryFlippedByteIsDetected) {
  const std::string good = EncodeCheckpoint(Sample(42, false, 0.5));
  std::mt19937_64 rng(20261129);
  for (int seed = 0; seed < 3000; ++seed) {
    std::string bad = good;
    const size_t at = rng() % bad.size();
    const auto flip = static_cast<char>(1 + rng() % 255);  // Never 0: the byte changes.
    bad[at] = static_cast<char>(bad[at] ^ flip);
    EXPECT_THROW(DecodeCheckpoint(bad, "mem"), CheckpointError)
        << "byte " << at << " seed " << seed;
  }
  // Every byte of the header, each bit.
  for (size_t at = 0; at < kCheckpointHeaderBytes; ++at) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = good;
      bad[at] = static_cast<char>(bad[at] ^ (1 << bit));
      EXPECT_THROW(DecodeCheckpoint(bad, "mem"), CheckpointError) << "header byte " << at;
    }
  }
}

TEST(CheckpointTest, EveryTruncationAndExtensionIsDetected) {
  const std::string good = EncodeCheckpoint(Sample(42, false, 0.5));
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_THROW(DecodeCheckpoint(std::string_view(good).substr(0, n), "mem"), CheckpointError)
        << n;
  }
  EXPECT_THROW(DecodeCheckpoint(good + "x", "mem"), CheckpointError);
  try {
    DecodeCheckpoint(std::string_view(good).substr(0, good.size() - 1), "some/file.epck");
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("some/file.epck"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

TEST(CheckpointTest, ResumeFallsBackPastCorruptAndTruncatedFiles) {
  TempDir dir;
  CheckpointStore store(dir.path(), {5, true, ""});
  const fs::path a = store.Save(Sample(10, false, 0.9));
  const fs::path b = store.Save(Sample(20, true, 0.8));
  const fs::path c = store.Save(Sample(30, false, 0.7));
  std::vector<std::string> warnings;
  auto warn = [&warnings](const std::string& w) { warnings.push_back(w); };
  auto found = FindLatestCheckpoint(dir.path(), warn);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->path, c);
  EXPECT_TRUE(warnings.empty());

  std::mt19937_64 rng(7);
  for (int seed = 0; seed < 50; ++seed) {
    const std::string good = ReadFile(c);
    std::string bad = good;
    bad[rng() % bad.size()] ^= static_cast<char>(1 + rng() % 255);
    WriteAll(c, bad);
    warnings.clear();
    found = FindLatestCheckpoint(dir.path(), warn);
    ASSERT_TRUE(found);
    EXPECT_EQ(found->path, b);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find(c.filename().string()), std::string::npos) << warnings[0];
    WriteAll(c, good);
  }
  // Truncated newest and corrupt second newest: the oldest.
  const std::string c_bytes = ReadFile(c);
  WriteAll(c, c_bytes.substr(0, c_bytes.size() / 2));
  std::string b_bytes = ReadFile(b);
  b_bytes[b_bytes.size() - 3] ^= 0x10;
  WriteAll(b, b_bytes);
  warnings.clear();
  found = FindLatestCheckpoint(dir.path(), warn);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->path, a);
  EXPECT_EQ(warnings.size(), 2u);
  EXPECT_EQ(found->checkpoint.position().global_step(), 10);
}

TEST(CheckpointTest, RetentionKeepsLastThreePlusBestAndNoTemporaries) {
  TempDir dir;
  CheckpointStore store(dir.path(), {3, true, ""});
  // Validation loss falls until save 8, then rises: best is the epoch end at step 80.
  for (int i = 1; i <= 20; ++i) {
    const double val_loss = i <= 8 ? 2.0 - 0.1 * i : 1.2 + 0.05 * i;
    store.Save(Sample(i * 10, true, val_loss));
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"best.epck", "ckpt-0000000180-b.epck",
                                             "ckpt-0000000190-b.epck", "ckpt-0000000200-b.epck"}));
  for (const auto& name : names) {
    EXPECT_NO_THROW(ReadCheckpointFile(dir.path() / name)) << name;
  }
  EXPECT_EQ(ReadCheckpointFile(dir.path() / "best.epck").position().global_step(), 80);
}

TEST(CheckpointTest, StoreRemovesLeftoverTemporaries) {
  TempDir dir;
  WriteAll(dir.path() / "ckpt-0000000010-a.epck.tmp.1234", "half a checkpoint");
  CheckpointStore store(dir.path(), {3, true, ""});
  EXPECT_FALSE(fs::exists(dir.path() / "ckpt-0000000010-a.epck.tmp.1234"));
  EXPECT_FALSE(FindLatestCheckpoint(dir.path(), {}));
}

TEST(CheckpointTest, ConfigChangesThatBreakExactnessAreRefused) {
  const v1::ExperimentConfig saved = Config();
  v1::ExperimentConfig current = saved;
  current.mutable_training()->set_epochs(saved.training().epochs() + 5);
  current.mutable_data()->set_data_dir("/elsewhere");
  current.mutable_checkpoint()->set_every_steps(7);
  EXPECT_NO_THROW(CheckResumeCompatible(saved, current, "ck.epck"));
  current.mutable_training()->set_batch_size(saved.training().batch_size() * 2);
  try {
    CheckResumeCompatible(saved, current, "ck.epck");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("training.batch_size"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ck.epck"), std::string::npos) << e.what();
  }
  current = saved;
  current.mutable_optimizer()->set_learning_rate(0.5f);
  EXPECT_THROW(CheckResumeCompatible(saved, current, "ck.epck"), InputError);
}

TEST(CheckpointTest, UnwritableDirectoryIsAClearError) {
  TempDir dir;
  WriteAll(dir.path() / "file", "x");
  try {
    CheckpointStore store(dir.path() / "file" / "checkpoints", {3, true, ""});
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("file/checkpoints"), std::string::npos) << e.what();
  }
  if (::geteuid() != 0) {
    fs::create_directories(dir.path() / "ro");
    fs::permissions(dir.path() / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    EXPECT_THROW(CheckpointStore(dir.path() / "ro", {3, true, ""}), InputError);
  }
}

// A tiny tmpfs (root only): a checkpoint that does not fit fails with the OS's reason,
// leaves no temporary file, and the checkpoint already there stays good.
TEST(CheckpointTest, FullDiskIsAClearErrorAndKeepsThePreviousCheckpoint) {
  TempDir dir;
  if (::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=256k") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs (" << std::strerror(errno)
                 << "; needs root or CAP_SYS_ADMIN)";
  }
  struct Unmount {
    const fs::path& p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{dir.path()};
  CheckpointStore store(dir.path(), {3, false, ""});
  const fs::path small = store.Save(Sample(10, false, 1.0));
  try {
    store.Save(Sample(20, false, 1.0, /*values=*/100000));  // ~2.4 MB.
    FAIL() << "a checkpoint larger than the disk was written";
  } catch (const SystemError& e) {
    EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ckpt-0000000020-a.epck"), std::string::npos) << e.what();
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    names.push_back(e.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{small.filename().string()});
  auto found = FindLatestCheckpoint(dir.path(), {});
  ASSERT_TRUE(found);
  EXPECT_EQ(found->path, small);
}

// Sample() of run `run_id`.
v1::Checkpoint OfRun(const std::string& run_id, int64_t global_step, bool epoch_end,
                     double val_loss) {
  v1::Checkpoint c = Sample(global_step, epoch_end, val_loss);
  c.set_run_id(run_id);
  return c;
}

std::vector<std::string> FileNames(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Issue 14, item 1: protobuf serializes a string that is not UTF-8 with only a log line,
// and the parser then refuses the whole message. Such a checkpoint is never written, and
// the run's earlier checkpoints (which retention would otherwise rotate) stay.
TEST(CheckpointTest, CheckpointThatWouldNotReadBackIsRefusedAndOlderOnesKept) {
  TempDir dir;
  CheckpointStore store(dir.path(), {1, true, "0a1b2c3d"});
  const fs::path good = store.Save(OfRun("0a1b2c3d", 10, true, 1.0));
  v1::Checkpoint bad = OfRun("0a1b2c3d", 20, true, 0.5);
  bad.mutable_config()->set_name("bad \xff\xfe name");
  try {
    store.Save(bad);
    FAIL() << "a checkpoint that does not parse was written";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("would not read back"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ckpt-0a1b2c3d-0000000020-b.epck"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(FileNames(dir.path()),
            (std::vector<std::string>{"best-0a1b2c3d.epck", good.filename().string()}));
  EXPECT_EQ(ReadCheckpointFile(dir.path() / "best-0a1b2c3d.epck").position().global_step(), 10);
}

// A file that differs from what was written (a disk that loses a write) is caught by the
// read-back, removed, and retention does not run, so the previous checkpoint stays.
TEST(CheckpointTest, FileThatDoesNotReadBackIsRemovedAndThePreviousKept) {
  TempDir dir;
  CheckpointStore store(dir.path(), {1, false, "0a1b2c3d"});
  const fs::path good = store.Save(OfRun("0a1b2c3d", 10, false, 1.0));
  try {
    store.Save(OfRun("0a1b2c3d", 20, false, 1.0), {}, CorruptFile);
    FAIL() << "a corrupted write went unnoticed";
  } catch (const SystemError& e) {
    EXPECT_NE(std::string(e.what()).find("does not read back after writing"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(FileNames(dir.path()), std::vector<std::string>{good.filename().string()});
  EXPECT_NO_THROW(ReadCheckpointFile(good));
}

TEST(CheckpointTest, NamesCarryTheRunIdAndOldNamesStillParse) {
  EXPECT_EQ(CheckpointFileName(120, true, "0a1b2c3d"), "ckpt-0a1b2c3d-0000000120-b.epck");
  EXPECT_EQ(CheckpointFileName(120, false), "ckpt-0000000120-a.epck");
  EXPECT_EQ(BestCheckpointFileName("0a1b2c3d"), "best-0a1b2c3d.epck");
  auto n = ParseCheckpointName("ckpt-0a1b2c3d-0000000120-b.epck");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->run_id, "0a1b2c3d");
  EXPECT_EQ(n->global_step, 120);
  EXPECT_TRUE(n->epoch_end);
  n = ParseCheckpointName("ckpt-0000000007-a.epck");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->run_id, "");
  EXPECT_EQ(n->global_step, 7);
  EXPECT_FALSE(n->epoch_end);
  EXPECT_TRUE(ParseCheckpointName("best.epck")->best);
  EXPECT_EQ(ParseCheckpointName("best-0a1b2c3d.epck")->run_id, "0a1b2c3d");
  for (const char* bad : {"ckpt-0000000007-c.epck", "ckpt-000000007-a.epck",
                          "ckpt-X-0000000007-a.epck", "ckpt-0a1b2c3d-0000000120-b.epck.tmp.12",
                          "best-.epck", "ckpt--0000000001-a.epck", "notes.txt"}) {
    EXPECT_FALSE(ParseCheckpointName(bad)) << bad;
  }
  const std::string id = NewRunId();
  EXPECT_EQ(id.size(), 8u);
  EXPECT_TRUE(ParseCheckpointName(CheckpointFileName(1, false, id))) << id;
  EXPECT_NE(NewRunId(), id);
}

// Issue 14, item 2: two runs in one directory. Each store rotates only its own run's
// checkpoints and keeps its own best, whatever the other run's step numbers; a directory
// of checkpoints from before run ids is one more run.
TEST(CheckpointTest, RetentionAndBestKeepRunsApart) {
  TempDir dir;
  {
    CheckpointStore old_run(dir.path(), {2, true, ""});
    old_run.Save(Sample(300, true, 0.1));
    old_run.Save(Sample(310, false, 0.1));
    old_run.Save(Sample(320, false, 0.1));
  }
  // File times tick coarsely (the kernel's clock tick): apart, so the runs' order is known.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CheckpointStore a(dir.path(), {3, true, "aaaaaaaa"});
  for (int i = 1; i <= 5; ++i) a.Save(OfRun("aaaaaaaa", 100 + 4 * i, true, 2.0 - 0.1 * i));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CheckpointStore b(dir.path(), {3, true, "bbbbbbbb"});
  for (int i = 1; i <= 4; ++i) b.Save(OfRun("bbbbbbbb", 4 * i, true, 3.0 - 0.1 * i));
  EXPECT_EQ(FileNames(dir.path()),
            (std::vector<std::string>{
                "best-aaaaaaaa.epck", "best-bbbbbbbb.epck", "best.epck", "ckpt-0000000310-a.epck",
                "ckpt-0000000320-a.epck", "ckpt-aaaaaaaa-0000000112-b.epck",
                "ckpt-aaaaaaaa-0000000116-b.epck", "ckpt-aaaaaaaa-0000000120-b.epck",
                "ckpt-bbbbbbbb-0000000008-b.epck", "ckpt-bbbbbbbb-0000000012-b.epck",
                "ckpt-bbbbbbbb-0000000016-b.epck"}));
  EXPECT_EQ(ReadCheckpointFile(dir.path() / "best-bbbbbbbb.epck").position().global_step(), 16);
  EXPECT_EQ(b.List().size(), 3u);
  // The run written last comes first, newest checkpoint first, its best last.
  const auto candidates = CheckpointCandidates(dir.path());
  ASSERT_EQ(candidates.size(), 11u);
  EXPECT_EQ(candidates[0].filename(), "ckpt-bbbbbbbb-0000000016-b.epck");
  EXPECT_EQ(candidates[3].filename(), "best-bbbbbbbb.epck");
  EXPECT_EQ(candidates[4].filename(), "ckpt-aaaaaaaa-0000000120-b.epck");
  EXPECT_EQ(candidates[8].filename(), "ckpt-0000000320-a.epck");
  // A filter that refuses run b passes over its other files unread and takes a's newest.
  int read_of_b = 0;
  const CheckpointSearch search =
      SearchCheckpoints(dir.path(), [&](const fs::path&, const v1::Checkpoint& c) {
        if (c.run_id() != "bbbbbbbb") return std::string();
        ++read_of_b;
        return std::string("not this one");
      });
  ASSERT_TRUE(search.found);
  EXPECT_EQ(search.found->path.filename(), "ckpt-aaaaaaaa-0000000120-b.epck");
  EXPECT_EQ(read_of_b, 1);
  EXPECT_EQ(search.skipped.size(), 4u);
  EXPECT_EQ(search.candidates, 11u);
}

TEST(FaultPlanTest, Parses) {
  const FaultPlan p = FaultPlan::Parse("kill-after-step=12,nan-grad=1:7,kill-in-validation=2");
  EXPECT_EQ(p.kill_after_step, 12);
  EXPECT_EQ(p.nan_rank, 1);
  EXPECT_EQ(p.nan_step, 7);
  EXPECT_EQ(p.kill_in_validation, 2);
  EXPECT_TRUE(p.any());
  EXPECT_FALSE(FaultPlan::Parse("").any());
  EXPECT_THROW(FaultPlan::Parse("explode=1"), InputError);
  EXPECT_THROW(FaultPlan::Parse("kill-after-step=x"), InputError);
}

}  // namespace
}  // namespace epochal::train
