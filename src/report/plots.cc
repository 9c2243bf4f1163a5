#include "epochal/report/plots.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "epochal/core/atomic_file.h"

namespace epochal::report {
namespace {

using svg::Point;
using svg::Series;
using svg::SeriesKind;

Series Line(std::string_view label, std::string_view color, std::vector<Point> points) {
  Series s;
  s.kind = SeriesKind::kLine;
  s.label = std::string(label);
  s.color = std::string(color);
  s.points = std::move(points);
  return s;
}

Series Bars(std::string_view label, std::string_view color, std::vector<Point> points) {
  Series s = Line(label, color, std::move(points));
  s.kind = SeriesKind::kStackedBar;
  return s;
}

double Epoch(const train::EpochRecord& e) { return static_cast<double>(e.epoch); }

// Mean of the per-batch losses (and of their positions) over windows of
// 1/kBatchWindowsPerEpoch epoch; window k covers (k/n, (k+1)/n]. Empty windows are absent.
std::vector<Point> SmoothedBatches(const std::vector<train::BatchRecord>& batches) {
  struct Sum {
    double progress = 0.0;
    double loss = 0.0;
    int count = 0;
  };
  std::map<long long, Sum> windows;
  for (const train::BatchRecord& b : batches) {
    if (!std::isfinite(b.epoch_progress) || !std::isfinite(b.loss)) continue;
    const double scaled = b.epoch_progress * kBatchWindowsPerEpoch;
    const long long k = std::max(0LL, static_cast<long long>(std::ceil(scaled - 1e-9)) - 1);
    Sum& sum = windows[k];
    sum.progress += b.epoch_progress;
    sum.loss += b.loss;
    ++sum.count;
  }
  std::vector<Point> points;
  points.reserve(windows.size());
  for (const auto& [k, sum] : windows) {
    points.push_back({sum.progress / sum.count, sum.loss / sum.count});
  }
  return points;
}

bool HasGap(const train::EpochRecord& e) {
  return e.gap_timing && e.gap_dropout && e.gap_batchnorm && e.gap_data;
}

// A bar with its standard error (0 when unknown).
Point WithError(double x, double y, const std::optional<double>& se) {
  return {x, y, se.value_or(0.0)};
}

}  // namespace

std::vector<svg::Chart> LossShiftCharts(const train::History& history) {
  std::vector<Point> train;
  std::vector<Point> shifted;
  std::vector<Point> val;
  std::vector<Point> aligned;
  double last_epoch = 0.0;
  for (const train::EpochRecord& e : history.epochs) {
    const double x = Epoch(e);
    last_epoch = std::max(last_epoch, x);
    train.push_back({x, e.loss});
    shifted.push_back({x - 0.5, e.loss});
    val.push_back({x, e.val_loss});
    if (e.aligned_train_loss) aligned.push_back({x, *e.aligned_train_loss});
  }

  // Both panels show the same x range and y scale, so they can be compared at a glance.
  std::vector<double> y_include;
  for (const auto* points : {&train, &val, &aligned}) {
    for (const Point& p : *points) {
      if (std::isfinite(p.y)) y_include.push_back(p.y);
    }
  }
  const std::vector<double> x_include = {0.0, std::max(last_epoch, 1.0)};

  svg::Chart top;
  top.title = "Training and validation loss";
  top.x_label = "epoch";
  top.y_label = "loss";
  top.integer_x_ticks = true;
  top.x_include = x_include;
  top.y_include = y_include;
  if (!train.empty()) {
    top.series.push_back(Line(kTrainLossLabel, svg::kBlue, train));
    top.series.push_back(Line(kValLossLabel, svg::kVermillion, val));
  }
  std::vector<Point> batches = SmoothedBatches(history.batches);
  if (!batches.empty()) {
    Series s = Line(kBatchLossLabel, svg::kSkyBlue, std::move(batches));
    s.markers = false;
    s.line_width = 1.2;
    s.opacity = 0.7;
    s.sets_range = false;
    top.series.push_back(std::move(s));
  }

  svg::Chart bottom;
  bottom.title = "Training loss shifted left by half an epoch";
  bottom.x_label = "epoch";
  bottom.y_label = "loss";
  bottom.integer_x_ticks = true;
  bottom.x_include = x_include;
  bottom.y_include = y_include;
  if (!shifted.empty()) {
    bottom.series.push_back(Line(kShiftedTrainLossLabel, svg::kBlue, std::move(shifted)));
    bottom.series.push_back(Line(kValLossLabel, svg::kVermillion, std::move(val)));
  }
  if (!aligned.empty()) {
    Series s = Line(kAlignedTrainLossLabel, svg::kGreen, std::move(aligned));
    s.dashed = true;
    bottom.series.push_back(std::move(s));
  }
  return {top, bottom};
}

svg::Chart GapChart(const train::History& history) {
  std::vector<Point> timing;
  std::vector<Point> dropout;
  std::vector<Point> batchnorm;
  std::vector<Point> data;
  std::vector<Point> total;
  for (const train::EpochRecord& e : history.epochs) {
    if (!HasGap(e)) continue;
    const double x = Epoch(e);
    timing.push_back(WithError(x, *e.gap_timing, e.gap_timing_se));
    dropout.push_back(WithError(x, *e.gap_dropout, e.gap_dropout_se));
    batchnorm.push_back(WithError(x, *e.gap_batchnorm, e.gap_batchnorm_se));
    data.push_back(WithError(x, *e.gap_data, e.gap_data_se));
    total.push_back({x, e.val_loss - e.loss});
  }
  const auto present = [&](const char* term) {
    return std::find(history.absent_terms.begin(), history.absent_terms.end(), term) ==
           history.absent_terms.end();
  };

  svg::Chart chart;
  chart.title = "Why validation loss differs from training loss";
  chart.x_label = "epoch";
  chart.y_label = "validation loss - training loss";
  chart.integer_x_ticks = true;
  chart.x_include = {0.0, 1.0};
  chart.empty_note = "no data: no epoch has the gap terms (probes off?)";
  if (total.empty()) return chart;
  chart.series.push_back(Bars(kTimingLabel, svg::kBlue, std::move(timing)));
  // A term this model cannot have is left out of the chart and its legend.
  if (present("dropout")) {
    chart.series.push_back(Bars(kDropoutLabel, svg::kOrange, std::move(dropout)));
  }
  if (present("batchnorm")) {
    chart.series.push_back(Bars(kBatchNormLabel, svg::kPurple, std::move(batchnorm)));
  }
  chart.series.push_back(Bars(kDataLabel, svg::kGreen, std::move(data)));
  Series line = Line(kTotalGapLabel, svg::kBlack, std::move(total));
  line.line_width = 1.8;
  chart.series.push_back(std::move(line));
  return chart;
}

std::string LossShiftSvg(const train::History& history) {
  return svg::RenderSvg(LossShiftCharts(history));
}

std::string GapSvg(const train::History& history) { return svg::RenderSvg({GapChart(history)}); }

void WritePlots(const train::History& history, const std::filesystem::path& dir) {
  WriteFileAtomic(dir / "loss_shift.svg", LossShiftSvg(history));
  WriteFileAtomic(dir / "gap.svg", GapSvg(history));
}

}  // namespace epochal::report
