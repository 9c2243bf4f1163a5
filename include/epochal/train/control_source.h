// The training loop's only view of the control plane: at every step boundary rank 0
// asks a ControlSource for the word all ranks act on after the step (dist::ControlWord).
// The gRPC service implements it; tests and `--stop-after-steps` use StopAtStep. Nothing
// here depends on the model, the optimizer or the data, so the control module includes
// this header and not the trainer's.
// Thread safety: Poll() is called from the training thread only.
#pragma once

#include <cstdint>

#include "epochal/dist/control_word.h"

namespace epochal::train {

// Decides, on rank 0 at each step boundary, what every rank does next.
class ControlSource {
 public:
  virtual ~ControlSource() = default;
  // Called on rank 0 before global step `step` (1-based) runs; the word takes effect on
  // every rank once that step has finished.
  virtual dist::ControlWord Poll(int64_t step) = 0;
};

// Stops the run after global step `step` (tests, and `--stop-after-steps`).
class StopAtStep final : public ControlSource {
 public:
  explicit StopAtStep(int64_t step) : step_(step) {}
  dist::ControlWord Poll(int64_t step) override {
    dist::ControlWord w;
    if (step == step_) w.action = dist::ControlWord::kStop;
    w.step = step;
    return w;
  }

 private:
  int64_t step_;
};

}  // namespace epochal::train
