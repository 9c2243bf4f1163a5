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
// next store that opens the directory.
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
};

// The checkpoints of one run directory: "ckpt-<global step, 10 digits>-<a|b>.epck"
// (a: within an epoch, b: after the epoch's validation; names sort chronologically) plus
// "best.epck", a copy of the epoch-end checkpoint with the lowest validation loss.
class CheckpointStore {
 public:
  // Creates `dir` if needed and checks that it is writable (InputError naming it
  // otherwise); removes leftover temporaries.
  CheckpointStore(std::filesystem::path dir, CheckpointStoreOptions options);

  // Writes `checkpoint`, updates best.epck when it is an epoch-end checkpoint whose last
  // epoch has the lowest validation loss so far, then deletes all but the newest
  // keep_last. Returns the path written. Throws SystemError (see WriteFileAtomic).
  std::filesystem::path Save(const v1::Checkpoint& checkpoint,
                             const std::function<void()>& after_partial_write = {});

  const std::filesystem::path& dir() const { return dir_; }
  // The numbered checkpoints present, oldest first.
  std::vector<std::filesystem::path> List() const;

 private:
  std::filesystem::path dir_;
  CheckpointStoreOptions options_;
  std::optional<double> best_val_loss_;
};

// "ckpt-0000000120-b.epck".
std::string CheckpointFileName(int64_t global_step, bool epoch_end);

// The numbered checkpoints of `dir` (and best.epck), newest first, by (step, phase).
std::vector<std::filesystem::path> CheckpointCandidates(const std::filesystem::path& dir);

// The newest checkpoint of `dir` that verifies. Each one that does not is reported
// through `warn` (file name and reason) and skipped. nullopt when none is good.
struct FoundCheckpoint {
  std::filesystem::path path;
  v1::Checkpoint checkpoint;
};
std::optional<FoundCheckpoint> FindLatestCheckpoint(
    const std::filesystem::path& dir, const std::function<void(const std::string&)>& warn);

}  // namespace epochal::train
