// The run's plots (DESIGN.md, "Files a run writes"), drawn with svg_plot.h:
//
// loss_shift.svg: two panels sharing the x range and the y scale, like the article's
//   figure. Top, "Training and validation loss": the training loss L_run(e) and the
//   validation loss V(e), both at x = e, with a faint line of the per-batch losses
//   averaged over windows of 1/20 epoch (left out of the y range and clipped, so early
//   high losses do not squash the curves). Bottom, "Training loss shifted left by half an
//   epoch": L_run(e) at x = e - 0.5 against V(e), plus the aligned training loss at x = e
//   for the epochs that have one.
// gap.svg: "Why validation loss differs from training loss": per epoch, the timing,
//   regularization and data terms as stacked bars (positive up from 0, negative down)
//   and their total V - L_run as a line. Epochs without all three terms are left out.
// A history with nothing to draw gives a valid document whose panels say "no data".
// Thread safety: reentrant; the caller must not mutate the History meanwhile.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "epochal/report/svg_plot.h"
#include "epochal/train/history.h"

namespace epochal::report {

// Legend labels, for readers of the documents and for tests.
inline constexpr std::string_view kTrainLossLabel = "training loss (mean during the epoch)";
inline constexpr std::string_view kValLossLabel = "validation loss (after the epoch)";
inline constexpr std::string_view kBatchLossLabel = "training loss per batch (1/20-epoch mean)";
inline constexpr std::string_view kShiftedTrainLossLabel = "training loss at epoch - 0.5";
inline constexpr std::string_view kAlignedTrainLossLabel =
    "aligned training loss (half an epoch each side)";
inline constexpr std::string_view kTimingLabel = "timing: training loss averaged during the epoch";
inline constexpr std::string_view kDropoutLabel = "dropout: dropout and L2, in training only";
inline constexpr std::string_view kBatchNormLabel =
    "batch norm: running instead of batch statistics";
inline constexpr std::string_view kDataLabel = "data: validation set vs. training probe";
inline constexpr std::string_view kTotalGapLabel = "total: validation loss - training loss";

// Windows per epoch of the smoothed per-batch line.
inline constexpr int kBatchWindowsPerEpoch = 20;

// The charts behind the documents.
std::vector<svg::Chart> LossShiftCharts(const train::History& history);
svg::Chart GapChart(const train::History& history);

// The documents.
std::string LossShiftSvg(const train::History& history);
std::string GapSvg(const train::History& history);

// Writes loss_shift.svg and gap.svg into `dir` (which must exist), each atomically
// (WriteFileAtomic). Throws epochal::SystemError naming the file.
void WritePlots(const train::History& history, const std::filesystem::path& dir);

}  // namespace epochal::report
