// Native SVG charts for the plots a run writes (no plotting runtime): line series with
// point markers and stacked bars on linear axes, with a title, axis labels, "nice" ticks
// (1-2-5 steps) and gridlines on both axes, and a legend below the plot area. Several
// charts stack vertically in one document as panels.
//
//   svg::Chart chart;
//   chart.title = "Loss";
//   chart.x_label = "epoch";
//   svg::Series& training = chart.series.emplace_back();
//   training.label = "training";
//   training.points = {{1, 0.54}, {2, 0.34}};
//   WriteFileAtomic(path, svg::RenderSvg({chart}));
//
// Output is deterministic: coordinates are printed with two decimals (trailing zeros
// trimmed), tick labels with as many decimals as the tick step needs, both with
// std::to_chars (independent of the locale). Text is escaped for XML.
//
// What the document contains, for readers and tests: each panel is a
// <g class="panel">; tick labels are <text class="x-tick"> / <text class="y-tick"> whose
// x (resp. y) attribute is the tick's pixel position; each line segment is a
// <polyline class="line" data-series="LABEL" points="x,y x,y ...">; each bar is a
// <rect class="bar" data-series="LABEL" data-x="X" data-value="V">; the y = 0 line of a
// chart with bars (or whose y range straddles 0) is <line class="zero-line">; legend
// labels are <text class="legend-label">; a chart with nothing to plot shows its
// empty_note as <text class="note">.
// Thread safety: the functions are reentrant.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

namespace epochal::report::svg {

// The Okabe-Ito palette, distinguishable under the common forms of color blindness.
inline constexpr std::string_view kBlue = "#0072B2";
inline constexpr std::string_view kOrange = "#E69F00";
inline constexpr std::string_view kGreen = "#009E73";
inline constexpr std::string_view kVermillion = "#D55E00";
inline constexpr std::string_view kSkyBlue = "#56B4E9";
inline constexpr std::string_view kPurple = "#CC79A7";
inline constexpr std::string_view kYellow = "#F0E442";
inline constexpr std::string_view kBlack = "#000000";
// Series without an explicit color take kPalette[index % size] in series order.
inline constexpr std::array<std::string_view, 8> kPalette = {
    kBlue, kVermillion, kGreen, kOrange, kSkyBlue, kPurple, kBlack, kYellow};

struct Point {
  double x = 0.0;
  double y = 0.0;
  // Stacked bars: a standard error, drawn as a whisker of +-error at the bar segment's
  // outer end (0: none).
  double error = 0.0;
};

enum class SeriesKind {
  // A polyline through the points in order; a non-finite coordinate breaks the line.
  kLine,
  // One bar per point, centred on x and chart.bar_width wide. Bars of all kStackedBar
  // series of a chart stack at equal x in series order: positive values upwards from 0,
  // negative values downwards from 0. Non-finite points are skipped.
  kStackedBar,
};

struct Series {
  SeriesKind kind = SeriesKind::kLine;
  // Legend text (also the data-series attribute); empty leaves it out of the legend.
  std::string label;
  // Any SVG color; empty takes kPalette by series index.
  std::string color;
  std::vector<Point> points;
  // Lines only: dashed stroke, point markers, stroke width in pixels.
  bool dashed = false;
  bool markers = true;
  double line_width = 2.0;
  // 0..1.
  double opacity = 1.0;
  // false: the axes ignore this series (context such as a noisy per-batch curve must not
  // squash the main curves) and its drawing is clipped to the plot area.
  bool sets_range = true;
};

struct Chart {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<Series> series;
  // Values each axis must show besides the data (e.g. 0, or a range shared by panels).
  std::vector<double> x_include;
  std::vector<double> y_include;
  // x tick step at least 1 (epochs).
  bool integer_x_ticks = false;
  // Bar width in x units.
  double bar_width = 0.6;
  // Shown in the plot area when no series has a finite point.
  std::string empty_note = "no data";
};

// Document geometry in pixels.
struct Style {
  double width = 820.0;
  double plot_height = 260.0;
};

// A linear axis: the shown range [lo, hi], its ticks and the pixels of lo and hi (for y,
// pixel_lo is below pixel_hi, i.e. larger).
struct Axis {
  double lo = 0.0;
  double hi = 1.0;
  double step = 0.2;
  std::vector<double> ticks;
  double pixel_lo = 0.0;
  double pixel_hi = 1.0;

  // Values far outside [lo, hi] (a loss of 1e308, a bar stacked past the largest double)
  // land a few plot sizes beyond the frame, never at an infinite or NaN coordinate.
  double ToPixel(double value) const {
    double fraction = (value - lo) / (hi - lo);
    if (!(fraction >= -kFarOutside)) fraction = -kFarOutside;
    if (fraction > 1.0 + kFarOutside) fraction = 1.0 + kFarOutside;
    return pixel_lo + fraction * (pixel_hi - pixel_lo);
  }
  static constexpr double kFarOutside = 10.0;
};

// Where a panel's parts go; RenderSvg draws exactly this.
struct PanelLayout {
  double top = 0.0;     // Of the panel in the document.
  double height = 0.0;  // Of the whole panel, title to legend.
  double plot_left = 0.0;
  double plot_top = 0.0;
  double plot_width = 0.0;
  double plot_height = 0.0;
  Axis x;
  Axis y;
  int legend_columns = 1;
  int legend_rows = 0;
  double legend_column_width = 0.0;
  bool has_data = false;
};

// Tick values: multiples of a step from {1, 2, 5} x 10^k with first tick <= lo and last
// tick >= hi, at most max_intervals steps apart, step >= min_step (when positive). A
// degenerate range (lo == hi) is widened around its value. Each tick is the double
// nearest the decimal it stands for (e.g. 0.3, not 0.30000000000000004).
std::vector<double> NiceTicks(double lo, double hi, int max_intervals = 6, double min_step = 0.0);

// The step NiceTicks uses for the same arguments.
double NiceStep(double lo, double hi, int max_intervals = 6, double min_step = 0.0);

// Fixed notation with at most max_decimals decimals, trailing zeros and a trailing '.'
// removed, "-0" printed as "0": FormatNumber(0.25, 2) == "0.25", FormatNumber(3.0, 2) ==
// "3", FormatNumber(-0.001, 2) == "0". Non-finite values print as "nan", "inf", "-inf".
std::string FormatNumber(double value, int max_decimals);

// A tick label: as many decimals as `step` needs (0.05 -> 2, 5 -> 0).
std::string FormatTick(double value, double step);

// Replaces & < > " ' by their entities.
std::string EscapeXml(std::string_view text);

// Approximate width in pixels of `text` (UTF-8) in the sans-serif font at font_size.
double TextWidth(std::string_view text, double font_size);

// The layout of `chart` drawn as a panel starting at `top`.
PanelLayout LayoutPanel(const Chart& chart, double top, const Style& style = {});

// One SVG document with the charts stacked top to bottom, as panels.
std::string RenderSvg(const std::vector<Chart>& panels, const Style& style = {});

}  // namespace epochal::report::svg
