// Checkpoint files: the container around v1::Checkpoint (proto/epochal/v1/checkpoint.proto),
// crash-safe writing, retention, and finding the newest good one for --resume auto.
//
// A file is a 32-byte header followed by the serialized message:
//   0  magic "EPOCHCKP"        8 bytes
//   8  format version (1)      uint32, little-endian
//  12  reserved (0)            uint32
//  16  payload length          uint64
//  24  CRC32C of the payload   uint32
//  28  CRC32C of bytes 0..27   uint32
// A file is good only if every header field checks out, its size is exactly 32 + length,
// both CRCs match and the payload parses. Any single flipped byte or truncation fails.
//
// Writing is atomic (core/atomic_file.h: a temporary "<name>.tmp.<pid>", fsync, rename,
// fsync of the directory), so a crash leaves either the previous set of checkpoints or the
// new one complete; temporaries are never taken for checkpoints and are removed by the
// next store that opens the directory. Each written file is read back and compared
// before the run's older checkpoints are rotated, so a checkpoint that does not read back
// is an error, never a silent loss.
//
// Only core and the generated protos are used here, so the loader can be fuzzed alone.
// Thread safety: functions are reentrant; a CheckpointStore is used by one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/v1/checkpoint.pb.h"

namespace epochal::train {

inline constexpr char kCheckpointMagic[8] = {'E', 'P', 'O', 'C', 'H', 'C', 'K', 'P'};
inline constexpr uint32_t kCheckpointVersion = 1;
inline constexpr size_t kCheckpointHeaderBytes = 32;
// A payload larger than this is taken for a corrupt length field: protobuf cannot parse
// a message of 2 GiB or more, so no checkpoint can be larger.
inline constexpr uint64_t kCheckpointMaxPayload = (uint64_t{1} << 31) - 1;

// A file that is not a good checkpoint: the message names the file and what is wrong.
class CheckpointError : public InputError {
 public:
  using InputError::InputError;
};

// The header and payload of `checkpoint` as one byte string.
std::string EncodeCheckpoint(const v1::Checkpoint& checkpoint);
// Verifies and parses `bytes`; `name` (usually the path) prefixes error messages.
// Throws CheckpointError.
v1::Checkpoint DecodeCheckpoint(std::string_view bytes, const std::string& name);
// Reads and decodes `path`. Throws CheckpointError (also when it cannot be read).
v1::Checkpoint ReadCheckpointFile(const std::filesystem::path& path);

// SHA-256 (hex) of the parameters, running statistics of every rank, momentum buffers,
// iteration count and learning-rate override: equal digests mean bitwise-equal model and
// optimizer state.
std::string StateDigest(const v1::Checkpoint& checkpoint);

// Throws InputError naming the first field where `saved` (from `source`) and `current`
// differ in a way that breaks an exact continuation. training.epochs may grow (or
// shrink), and data.data_dir, analysis.no_scan and the checkpoint section may change.
void CheckResumeCompatible(const v1::ExperimentConfig& saved, const v1::ExperimentConfig& current,
                           const std::string& source);

struct CheckpointStoreOptions {
  int keep_last = 3;
  bool keep_best = true;
  // The run whose checkpoints the store writes, names and rotates; "" gives the names of
  // checkpoints written before run ids ("ckpt-<step>-<a|b>.epck", "best.epck").
  std::string run_id;
};

// A fresh run id: 8 lowercase hex digits, from the clock, the process id and the system's
// random source.
std::string NewRunId();

// What a checkpoint's file name says.
struct CheckpointName {
  std::string run_id;  // "" for a checkpoint written before run ids.
  int64_t global_step = 0;
  bool epoch_end = false;
  bool best = false;  // "best[-<run id>].epck": no step in the name (global_step 0).
};
// "ckpt-[<run id>-]<step, 10 digits>-<a|b>.epck" or "best[-<run id>].epck"; nullopt for
// any other name (temporaries included).
std::optional<CheckpointName> ParseCheckpointName(const std::string& file_name);

// "ckpt-<run id>-0000000120-b.epck" ("ckpt-0000000120-b.epck" without a run id).
std::string CheckpointFileName(int64_t global_step, bool epoch_end, const std::string& run_id = "");
// "best-<run id>.epck" ("best.epck" without a run id).
std::string BestCheckpointFileName(const std::string& run_id = "");

// The checkpoints of one run in a run directory's checkpoints/: the numbered ones (a:
// within an epoch, b: after the epoch's validation) plus the best one, a copy of the
// epoch-end checkpoint with the lowest validation loss. Other runs' checkpoints in the
// same directory are left alone (a directory reused with --overwrite holds several runs).
class CheckpointStore {
 public:
  // Creates `dir` if needed and checks that it is writable (InputError naming it
  // otherwise); removes leftover temporaries.
  CheckpointStore(std::filesystem::path dir, CheckpointStoreOptions options);

  // Writes `checkpoint` (whose run_id must be the store's) so that it reads back: the
  // encoded bytes are decoded before anything is written (Error when they do not parse,
  // as protobuf's serializer does with a string that is not UTF-8), and the file is read
  // back and compared after it is written (SystemError when it differs; it is removed).
  // Only then is the best checkpoint updated, when this is an epoch-end checkpoint whose
  // last epoch has the lowest validation loss so far, and all but the run's newest
  // keep_last deleted. A failure leaves the run's earlier checkpoints in place. Returns
  // the path written. Throws SystemError for I/O errors (see WriteFileAtomic).
  // `after_partial_write` and `after_write` (given the path) are for tests.
  std::filesystem::path Save(
      const v1::Checkpoint& checkpoint, const std::function<void()>& after_partial_write = {},
      const std::function<void(const std::filesystem::path&)>& after_write = {});

  const std::filesystem::path& dir() const { return dir_; }
  const std::string& run_id() const { return options_.run_id; }
  // The run's numbered checkpoints present, oldest first.
  std::vector<std::filesystem::path> List() const;

 private:
  std::filesystem::path dir_;
  CheckpointStoreOptions options_;
  std::optional<double> best_val_loss_;
};

// Every checkpoint in `dir`, numbered and best: the runs newest first (by the time their
// newest file was written), each run's numbered checkpoints newest first by (step, phase),
// then its best one.
std::vector<std::filesystem::path> CheckpointCandidates(const std::filesystem::path& dir);

struct FoundCheckpoint {
  std::filesystem::path path;
  v1::Checkpoint checkpoint;
};

// A checkpoint passed over, and why (without the path: "not a good checkpoint: ...").
struct SkippedCheckpoint {
  std::filesystem::path path;
  std::string reason;
};

struct CheckpointSearch {
  std::optional<FoundCheckpoint> found;
  std::vector<SkippedCheckpoint> skipped;  // In the order they were tried.
  size_t candidates = 0;                   // How many files there were to try.
};

// Says whether a run can be continued from a good checkpoint: "" if so, else why not.
using CheckpointFilter =
    std::function<std::string(const std::filesystem::path&, const v1::Checkpoint&)>;

// The first of CheckpointCandidates(dir) that verifies and that `accept` (if set) takes.
// A good checkpoint that `accept` refuses rules out the rest of its run without reading
// them (a run's checkpoints share their config and rank count).
CheckpointSearch SearchCheckpoints(const std::filesystem::path& dir,
                                   const CheckpointFilter& accept = {});

// The newest checkpoint of `dir` that verifies. Each one that does not is reported
// through `warn` (file name and reason) and skipped. nullopt when none is good.
std::optional<FoundCheckpoint> FindLatestCheckpoint(
    const std::filesystem::path& dir, const std::function<void(const std::string&)>& warn);

}  // namespace epochal::train
