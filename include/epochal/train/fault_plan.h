// Faults a test can ask a training run to suffer, at exact points, through the
// environment variable EPOCHAL_FAULT (comma-separated; docs/fault-tolerance.md):
//   kill-after-step=N          rank 0 sends itself SIGKILL once global step N is done
//                              (after that step's checkpoint, if one is due)
//   kill-in-validation=E       rank 0 sends itself SIGKILL during epoch E's validation
//   kill-in-checkpoint-write=K rank 0 sends itself SIGKILL half-way through writing its
//                              K-th checkpoint of this process
//   corrupt-checkpoint-write=K rank 0 flips a byte of its K-th checkpoint of this process
//                              once the file is in place (a write that does not read back)
//   term-after-step=N          every rank sends itself SIGTERM once global step N is done
//   nan-grad=R:N               rank R makes one gradient value NaN at global step N,
//                              before the all-reduce
//   perturb-weights=R:N        rank R adds 1e-3 to one weight once global step N is done
//                              (before that step's checkpoint): its replica diverges
// Nothing here runs unless the variable is set; production runs never set it.
// Thread safety: plain values.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace epochal::train {

struct FaultPlan {
  int64_t kill_after_step = 0;
  int kill_in_validation = 0;
  int kill_in_checkpoint_write = 0;
  int corrupt_checkpoint_write = 0;
  int64_t term_after_step = 0;
  int nan_rank = -1;
  int64_t nan_step = 0;
  int perturb_rank = -1;
  int64_t perturb_step = 0;

  bool any() const {
    return kill_after_step > 0 || kill_in_validation > 0 || kill_in_checkpoint_write > 0 ||
           corrupt_checkpoint_write > 0 || term_after_step > 0 || nan_step > 0 || perturb_step > 0;
  }
  // Parses `spec` (the format above); throws InputError naming the bad entry.
  static FaultPlan Parse(const std::string& spec);
  // Parse(getenv("EPOCHAL_FAULT")), or no fault when unset.
  static FaultPlan FromEnvironment();
};

// Sends SIGKILL to this process (never returns).
[[noreturn]] void KillSelf();
// Flips the bits of the byte in the middle of the file at `path` (corrupt-checkpoint-write).
void CorruptFile(const std::filesystem::path& path);

}  // namespace epochal::train
