// StepEnvelope: what rides in the last gradient bucket besides gradients.
//
// Each rank packs its envelope into the bucketer's extras before backward marks the last
// bucket; the all-reduce sums the extras with the gradients, so after Wait() every rank
// unpacks the same global envelope and a step costs no collective of its own:
//   - the loss sum, correct count and sample count of the global batch;
//   - rank 0's control word for the next step boundary (the others contribute zeros);
//   - rank 0's request that every rank gather its step timings at this boundary;
//   - per rank, the milliseconds it took in the previous step from leaving Wait() to
//     entering it again (each rank fills its own slot, the others are zeros).
// Every slot is exact in float after the sum: counts are small integers, the learning
// rate travels as three 22-bit integers (PackRate), the loss sum is rounded to float
// once, as it always was.
//
// Layout of the extras (Size(world) floats):
//   0 loss sum, 1 correct, 2 count, 3 control action, 4..6 control rate,
//   7 gather flag, 8.. one arrival time per rank.
//
// Thread safety: a plain value; Pack and Unpack neither allocate nor throw once the
// arrival vector has its size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "epochal/dist/control_word.h"

namespace epochal::dist {

struct StepEnvelope {
  // Floats the envelope of a job with `world_size` ranks occupies in the extras.
  static size_t Size(int world_size);

  // An envelope for `world_size` ranks, everything zero.
  explicit StepEnvelope(int world_size = 1);

  double loss_sum = 0.0;  // Sum of per-sample losses (this rank's, or global once unpacked).
  int64_t correct = 0;    // Samples classified correctly.
  int64_t count = 0;      // Samples.
  // Rank 0's decision for the step boundary; action and learning_rate travel, `step` does
  // not (every rank knows the step it is at).
  ControlWord control;
  bool gather_timings = false;
  // Milliseconds from leaving Wait() to entering it in the previous step, per rank.
  std::vector<float> arrival_ms;

  // Writes this rank's contribution into `extras` (Size(world) floats).
  void Pack(std::span<float> extras) const;
  // Reads the all-reduced `extras` into this envelope. With one rank nothing was reduced:
  // the sums of `sent` (this rank's own) keep their double precision.
  void Unpack(std::span<const float> extras, const StepEnvelope& sent);
  // The slowest rank's arrival time, in milliseconds.
  float SlowestArrivalMs() const;
};

}  // namespace epochal::dist
