// ControlWord: the coordinator's decision for the next step, identical on every rank.
//
// The control plane (gRPC on rank 0) never touches the training loop directly: it sets
// the word rank 0 holds, and at each step boundary SyncControlWord broadcasts that word,
// so every rank pauses, stops, changes its learning rate or checkpoints at the same step.
// Collective: every rank calls it once per step, at the same point of the loop.
//
// Thread safety: SyncControlWord follows the Communicator's rules (MPI thread only).
#pragma once

#include <chrono>
#include <cstdint>
#include <type_traits>

#include "epochal/dist/communicator.h"

namespace epochal::dist {

struct ControlWord {
  enum Action : int32_t {
    kContinue = 0,
    kPause = 1,
    kStop = 2,
    kSetLearningRate = 3,  // learning_rate holds the new rate
    kCheckpoint = 4,
  };
  int32_t action = kContinue;
  int64_t step = 0;  // the global step the word applies to
  double learning_rate = 0.0;

  bool operator==(const ControlWord&) const = default;
};
static_assert(std::is_trivially_copyable_v<ControlWord>);

// "continue", "pause", "stop", "set_learning_rate", "checkpoint"; "unknown" otherwise.
const char* ActionName(int32_t action);

// Collective: every rank returns the root's `root_word` (other ranks' argument is
// ignored). One MPI_Bcast of the struct's bytes; no allocation. Solo: returns root_word.
ControlWord SyncControlWord(const Communicator& comm, const ControlWord& root_word);

// The same collective for a rank that may wait long for the root (a paused job): it
// starts an MPI_Ibcast and tests it every `poll_interval`, sleeping in between, instead of
// blocking in MPI_Bcast, where Open MPI busy-polls and keeps a core at 100% on every
// waiting rank. Costs up to `poll_interval` of extra latency. Solo: returns root_word.
ControlWord SyncControlWordIdle(const Communicator& comm, const ControlWord& root_word,
                                std::chrono::microseconds poll_interval);

// A learning rate as three exact small integers (22 bits each), so that it can ride in
// float gradient-bucket extras and be summed with zeros from the other ranks without
// rounding: every rank decodes exactly rank 0's double.
struct PackedRate {
  float part[3] = {0, 0, 0};
};
PackedRate PackRate(double rate);
double UnpackRate(const float part[3]);

}  // namespace epochal::dist
