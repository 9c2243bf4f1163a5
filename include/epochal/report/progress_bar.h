// ProgressBar: the per-epoch console progress of the coordinator.
//
// Interactive (a terminal): a Keras-style bar redrawn in place with '\r',
//   " 1856/60000 [>.............................] - ETA: 1:42 - loss: 0.5433 - accuracy: 0.8181"
// at most once per kRedrawInterval seconds, except the last draw (done == total) and
// Finish(), which always draw.
// Not interactive (a log file, Slurm output): one line each time progress crosses a 10%
// boundary, so a log holds ten lines an epoch:
//   "epoch progress 10% (6000/60000) - ETA 1:32 - loss: 0.5433 - accuracy: 0.8181"
// (the 100% line shows the elapsed time instead of the ETA).
// The clock is injectable so tests are deterministic; the ETA is the mean time per item
// so far times the items left.
// Thread safety: none; one thread drives a bar. The stream is borrowed and must outlive
// the bar.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <iosfwd>
#include <string>

namespace epochal::report {

// True when `stream` is a terminal (isatty), i.e. a redrawn bar will display properly.
bool IsTerminal(FILE* stream);

class ProgressBar {
 public:
  // Seconds on any monotonic scale.
  using Clock = std::function<double()>;
  static constexpr double kRedrawInterval = 0.1;
  static constexpr int kBarWidth = 30;

  // A steady_clock-based Clock.
  static double SteadySeconds();

  // `total` items (images) this epoch, > 0, else throws epochal::InputError. The clock is
  // read once here to start the epoch's timer.
  ProgressBar(int64_t total, std::ostream& out, bool interactive, Clock clock = SteadySeconds);

  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // `done` items so far (clamped to [0, total]) and the running mean loss and accuracy.
  void Update(int64_t done, double loss, double accuracy);
  // Draws the complete bar with the elapsed time (interactive: then ends the line; not
  // interactive: prints the 100% line unless already printed). Idempotent.
  void Finish(double loss, double accuracy);

  // The interactive line for a state, without '\r' or padding (exposed for tests).
  std::string BarLine(int64_t done, double loss, double accuracy, double now) const;

 private:
  void DrawInteractive(int64_t done, double loss, double accuracy, double now);
  void PrintDecileLine(int decile, int64_t done, double loss, double accuracy, double now);
  double Eta(int64_t done, double now) const;

  int64_t total_;
  std::ostream& out_;
  bool interactive_;
  Clock clock_;
  double start_;
  double last_draw_ = 0.0;
  bool drawn_ = false;
  size_t last_width_ = 0;
  int last_decile_ = 0;  // highest 10% boundary already reported (0..10)
  bool finished_ = false;
};

}  // namespace epochal::report
