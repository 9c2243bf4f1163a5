#include "epochal/report/svg_plot.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

namespace epochal::report::svg {
namespace {

constexpr double kTitleSize = 15.0;
constexpr double kLabelSize = 13.0;
constexpr double kTickSize = 11.0;
constexpr double kLegendSize = 12.0;
constexpr double kNoteSize = 13.0;

constexpr double kMargin = 12.0;         // Left edge to the rotated y label.
constexpr double kRightMargin = 24.0;    // Plot area to the right edge (room for a tick label).
constexpr double kTitleBaseline = 24.0;  // Panel top to the title's baseline.
constexpr double kPlotTop = 40.0;        // Panel top to the plot area.
constexpr double kTickLength = 4.0;
constexpr double kLegendRow = 20.0;
constexpr double kLegendSwatch = 22.0;
constexpr double kLegendGap = 8.0;       // Swatch to label.
constexpr double kLegendPadding = 22.0;  // Between legend columns.
constexpr int kMaxYIntervals = 6;
constexpr double kPixelsPerXInterval = 70.0;
constexpr double kRangeMargin = 0.02;  // Of the tick span, between data and the frame.
// Axis ends stay within this, so that hi - lo is finite.
constexpr double kMaxAxisValue = 1e307;

constexpr const char* kGridColor = "#e3e3e3";
constexpr const char* kFrameColor = "#8c8c8c";
constexpr const char* kTextColor = "#222222";
constexpr const char* kZeroColor = "#444444";

// 10^n, exact for the powers a double holds exactly (|n| <= 22).
double Pow10(int n) { return std::pow(10.0, n); }

// A 1-2-5 step m x 10^e and the tick indices k (tick k = k * step) it needs.
struct Scale {
  int mantissa = 1;
  int exponent = 0;
  double step = 1.0;
  double first = 0.0;  // Integral.
  double last = 0.0;   // Integral.

  double Tick(double k) const {
    // (k * m) / 10^-e rounds once, so 3 x 0.1 comes out as the double nearest 0.3.
    return exponent >= 0 ? k * mantissa * Pow10(exponent) : k * mantissa / Pow10(-exponent);
  }
};

void NormalizeRange(double* lo, double* hi) {
  if (!std::isfinite(*lo) || !std::isfinite(*hi)) {
    *lo = 0.0;
    *hi = 1.0;
  }
  if (*lo > *hi) std::swap(*lo, *hi);
  // Keeps the span finite (and the tick search short); no loss gets near this.
  *lo = std::max(*lo, -1e306);
  *hi = std::min(*hi, 1e306);
  const double magnitude = std::max(std::abs(*lo), std::abs(*hi));
  if (*hi - *lo <= magnitude * 1e-12) {
    const double widen = magnitude == 0.0 ? 1.0 : magnitude * 0.1;
    *lo -= widen;
    *hi += widen;
  }
}

Scale ComputeScale(double lo, double hi, int max_intervals, double min_step) {
  NormalizeRange(&lo, &hi);
  max_intervals = std::max(1, max_intervals);
  const double span = hi - lo;
  int exponent = static_cast<int>(std::floor(std::log10(span / max_intervals))) - 1;
  static constexpr int kMantissas[] = {1, 2, 5};
  for (;; ++exponent) {
    for (int m : kMantissas) {
      Scale s;
      s.mantissa = m;
      s.exponent = exponent;
      s.step = s.Tick(1.0);
      if (min_step > 0.0 && s.step < min_step * (1.0 - 1e-12)) continue;
      s.first = std::floor(lo / s.step + 1e-9);
      s.last = std::ceil(hi / s.step - 1e-9);
      if (s.last - s.first <= max_intervals) return s;
    }
  }
}

std::vector<double> Ticks(const Scale& s) {
  std::vector<double> ticks;
  for (double k = s.first; k <= s.last + 0.5; k += 1.0) ticks.push_back(s.Tick(k) + 0.0);
  return ticks;
}

// Two decimals for coordinates.
std::string Px(double value) { return FormatNumber(value, 2); }

size_t CodePoints(std::string_view text) {
  size_t n = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

bool Finite(const Point& p) { return std::isfinite(p.x) && std::isfinite(p.y); }

std::string SeriesColor(const Series& series, size_t index) {
  if (!series.color.empty()) return series.color;
  return std::string(kPalette[index % kPalette.size()]);
}

// Positive and negative stack tops at one x.
struct Stack {
  double positive = 0.0;
  double negative = 0.0;
};

// One bar segment, in data units.
struct Bar {
  size_t series = 0;
  double x = 0.0;
  double value = 0.0;
  double from = 0.0;
  double to = 0.0;
  double error = 0.0;
};

std::vector<Bar> StackBars(const Chart& chart) {
  std::vector<Bar> bars;
  std::map<double, Stack> stacks;
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const Series& series = chart.series[i];
    if (series.kind != SeriesKind::kStackedBar) continue;
    for (const Point& p : series.points) {
      if (!Finite(p)) continue;
      Stack& stack = stacks[p.x];
      double& top = p.y >= 0.0 ? stack.positive : stack.negative;
      bars.push_back({.series = i,
                      .x = p.x,
                      .value = p.y,
                      .from = top,
                      .to = top + p.y,
                      .error = std::isfinite(p.error) ? std::abs(p.error) : 0.0});
      top += p.y;
    }
  }
  return bars;
}

bool HasBars(const Chart& chart) {
  return std::any_of(chart.series.begin(), chart.series.end(), [](const Series& s) {
    return s.kind == SeriesKind::kStackedBar &&
           std::any_of(s.points.begin(), s.points.end(), Finite);
  });
}

struct Extent {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void Add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool Empty() const { return lo > hi; }
};

struct LegendEntry {
  size_t series = 0;
  double width = 0.0;
};

std::vector<LegendEntry> LegendEntries(const Chart& chart) {
  std::vector<LegendEntry> entries;
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const Series& s = chart.series[i];
    if (s.label.empty()) continue;
    entries.push_back(
        {i, kLegendSwatch + kLegendGap + TextWidth(s.label, kLegendSize) + kLegendPadding});
  }
  return entries;
}

void AppendText(std::string* out, std::string_view cls, double x, double y, double size,
                std::string_view anchor, std::string_view text, std::string_view extra = {}) {
  out->append("<text class=\"").append(cls).append("\" x=\"").append(Px(x));
  out->append("\" y=\"").append(Px(y)).append("\" font-size=\"").append(Px(size));
  out->append("\" text-anchor=\"").append(anchor).append("\" fill=\"").append(kTextColor);
  out->append("\"");
  if (!extra.empty()) out->append(" ").append(extra);
  out->append(">").append(EscapeXml(text)).append("</text>\n");
}

void AppendLine(std::string* out, std::string_view cls, double x1, double y1, double x2, double y2,
                std::string_view stroke, double width) {
  out->append("<line class=\"").append(cls).append("\" x1=\"").append(Px(x1));
  out->append("\" y1=\"").append(Px(y1)).append("\" x2=\"").append(Px(x2));
  out->append("\" y2=\"").append(Px(y2)).append("\" stroke=\"").append(stroke);
  out->append("\" stroke-width=\"").append(Px(width)).append("\"/>\n");
}

std::string LineStyle(const Series& s, const std::string& color) {
  std::string style = "fill=\"none\" stroke=\"" + EscapeXml(color) + "\" stroke-width=\"" +
                      Px(s.line_width) + "\" stroke-linejoin=\"round\" stroke-linecap=\"round\"";
  if (s.dashed) style += " stroke-dasharray=\"7 4\"";
  if (s.opacity < 1.0) style += " stroke-opacity=\"" + FormatNumber(s.opacity, 3) + "\"";
  return style;
}

// The fill-opacity attribute (with a leading space) of a translucent series, else "".
std::string FillOpacity(const Series& s) {
  if (s.opacity >= 1.0) return "";
  return " fill-opacity=\"" + FormatNumber(s.opacity, 3) + "\"";
}

double MarkerRadius(const Series& s) { return 1.5 + s.line_width * 0.75; }

void AppendLineSeries(const Series& s, const std::string& color, const PanelLayout& layout,
                      std::string* out) {
  const std::string label = EscapeXml(s.label);
  const std::string style = LineStyle(s, color);
  std::string points;
  auto flush = [&] {
    if (points.empty()) return;
    out->append("<polyline class=\"line\" data-series=\"").append(label).append("\" ");
    out->append(style).append(" points=\"").append(points).append("\"/>\n");
    points.clear();
  };
  for (const Point& p : s.points) {
    if (!Finite(p)) {
      flush();
      continue;
    }
    if (!points.empty()) points.push_back(' ');
    points.append(Px(layout.x.ToPixel(p.x))).append(",").append(Px(layout.y.ToPixel(p.y)));
  }
  flush();
  if (!s.markers) return;
  const std::string fill = EscapeXml(color);
  for (const Point& p : s.points) {
    if (!Finite(p)) continue;
    out->append("<circle class=\"marker\" cx=\"").append(Px(layout.x.ToPixel(p.x)));
    out->append("\" cy=\"").append(Px(layout.y.ToPixel(p.y))).append("\" r=\"");
    out->append(Px(MarkerRadius(s))).append("\" fill=\"").append(fill).append("\"");
    out->append(FillOpacity(s));
    out->append("/>\n");
  }
}

void AppendPanel(const Chart& chart, const PanelLayout& layout, size_t index, std::string* out) {
  const double plot_right = layout.plot_left + layout.plot_width;
  const double plot_bottom = layout.plot_top + layout.plot_height;
  const std::string clip_id = "plot-area-" + std::to_string(index);

  out->append("<g class=\"panel\">\n");
  out->append("<defs><clipPath id=\"").append(clip_id).append("\"><rect x=\"");
  out->append(Px(layout.plot_left)).append("\" y=\"").append(Px(layout.plot_top));
  out->append("\" width=\"").append(Px(layout.plot_width)).append("\" height=\"");
  out->append(Px(layout.plot_height)).append("\"/></clipPath></defs>\n");

  AppendText(out, "title", layout.plot_left, layout.top + kTitleBaseline, kTitleSize, "start",
             chart.title, "font-weight=\"bold\"");

  // Gridlines, then the frame over them.
  out->append("<g class=\"grid\">\n");
  for (double t : layout.x.ticks) {
    const double px = layout.x.ToPixel(t);
    AppendLine(out, "grid-x", px, layout.plot_top, px, plot_bottom, kGridColor, 1.0);
  }
  for (double t : layout.y.ticks) {
    const double py = layout.y.ToPixel(t);
    AppendLine(out, "grid-y", layout.plot_left, py, plot_right, py, kGridColor, 1.0);
  }
  out->append("</g>\n");
  out->append("<rect class=\"frame\" x=\"").append(Px(layout.plot_left)).append("\" y=\"");
  out->append(Px(layout.plot_top)).append("\" width=\"").append(Px(layout.plot_width));
  out->append("\" height=\"").append(Px(layout.plot_height)).append("\" fill=\"none\" stroke=\"");
  out->append(kFrameColor).append("\" stroke-width=\"1\"/>\n");

  // Ticks and their labels.
  for (double t : layout.x.ticks) {
    const double px = layout.x.ToPixel(t);
    AppendLine(out, "tick", px, plot_bottom, px, plot_bottom + kTickLength, kFrameColor, 1.0);
    AppendText(out, "x-tick", px, plot_bottom + kTickLength + 12.0, kTickSize, "middle",
               FormatTick(t, layout.x.step));
  }
  for (double t : layout.y.ticks) {
    const double py = layout.y.ToPixel(t);
    AppendLine(out, "tick", layout.plot_left - kTickLength, py, layout.plot_left, py, kFrameColor,
               1.0);
    AppendText(out, "y-tick", layout.plot_left - kTickLength - 3.0, py, kTickSize, "end",
               FormatTick(t, layout.y.step), "dy=\"0.35em\"");
  }

  // Axis labels.
  AppendText(out, "x-label", layout.plot_left + layout.plot_width / 2.0, plot_bottom + 36.0,
             kLabelSize, "middle", chart.x_label);
  const double y_label_x = kMargin + kLabelSize;
  const double y_label_y = layout.plot_top + layout.plot_height / 2.0;
  AppendText(out, "y-label", y_label_x, y_label_y, kLabelSize, "middle", chart.y_label,
             "transform=\"rotate(-90 " + Px(y_label_x) + " " + Px(y_label_y) + ")\"");

  // The zero line under the data.
  const bool bars = HasBars(chart);
  if (layout.has_data && layout.y.lo <= 0.0 && 0.0 <= layout.y.hi && (bars || layout.y.lo < 0.0)) {
    const double py = layout.y.ToPixel(0.0);
    AppendLine(out, "zero-line", layout.plot_left, py, plot_right, py, kZeroColor, 1.2);
  }

  // Bars, then lines over them.
  const double half = chart.bar_width / 2.0;
  for (const Bar& bar : StackBars(chart)) {
    const Series& s = chart.series[bar.series];
    const double x0 = layout.x.ToPixel(bar.x - half);
    const double x1 = layout.x.ToPixel(bar.x + half);
    const double ya = layout.y.ToPixel(bar.from);
    const double yb = layout.y.ToPixel(bar.to);
    out->append("<rect class=\"bar\" data-series=\"").append(EscapeXml(s.label));
    out->append("\" data-x=\"").append(FormatNumber(bar.x, 6)).append("\" data-value=\"");
    out->append(FormatNumber(bar.value, 6)).append("\" x=\"").append(Px(x0)).append("\" y=\"");
    out->append(Px(std::min(ya, yb))).append("\" width=\"").append(Px(x1 - x0));
    out->append("\" height=\"").append(Px(std::abs(yb - ya))).append("\" fill=\"");
    out->append(EscapeXml(SeriesColor(s, bar.series)));
    out->append("\" stroke=\"#ffffff\" stroke-width=\"0.6\"");
    out->append(FillOpacity(s));
    out->append("/>\n");
  }
  // Error whiskers over the bars: +-1 standard error at each segment's outer end.
  for (const Bar& bar : StackBars(chart)) {
    if (bar.error <= 0.0) continue;
    const double cx = layout.x.ToPixel(bar.x);
    const double w = (layout.x.ToPixel(bar.x + half) - layout.x.ToPixel(bar.x - half)) / 4.0;
    const double lo = layout.y.ToPixel(bar.to - bar.error);
    const double hi = layout.y.ToPixel(bar.to + bar.error);
    out->append("<g class=\"error-bar\" data-series=\"")
        .append(EscapeXml(chart.series[bar.series].label))
        .append("\" data-x=\"")
        .append(FormatNumber(bar.x, 6))
        .append("\" data-error=\"")
        .append(FormatNumber(bar.error, 6))
        .append("\">\n");
    AppendLine(out, "error-bar", cx, lo, cx, hi, kTextColor, 1.0);
    AppendLine(out, "error-bar", cx - w, lo, cx + w, lo, kTextColor, 1.0);
    AppendLine(out, "error-bar", cx - w, hi, cx + w, hi, kTextColor, 1.0);
    out->append("</g>\n");
  }
  // Context lines (sets_range = false) go under the others, clipped to the plot area.
  for (const bool context : {true, false}) {
    for (size_t i = 0; i < chart.series.size(); ++i) {
      const Series& s = chart.series[i];
      if (s.kind != SeriesKind::kLine || s.sets_range == context) continue;
      if (context) out->append("<g clip-path=\"url(#").append(clip_id).append(")\">\n");
      AppendLineSeries(s, SeriesColor(s, i), layout, out);
      if (context) out->append("</g>\n");
    }
  }

  if (!layout.has_data) {
    AppendText(out, "note", layout.plot_left + layout.plot_width / 2.0,
               layout.plot_top + layout.plot_height / 2.0, kNoteSize, "middle", chart.empty_note,
               "font-style=\"italic\" dy=\"0.35em\"");
  }

  // Legend, in a grid below the x label.
  const std::vector<LegendEntry> entries = LegendEntries(chart);
  if (!entries.empty()) out->append("<g class=\"legend\">\n");
  for (size_t k = 0; k < entries.size(); ++k) {
    const Series& s = chart.series[entries[k].series];
    const std::string color = SeriesColor(s, entries[k].series);
    const size_t columns = static_cast<size_t>(layout.legend_columns);
    const double x =
        layout.plot_left + static_cast<double>(k % columns) * layout.legend_column_width;
    const double cy = plot_bottom + 58.0 + static_cast<double>(k / columns) * kLegendRow;
    if (s.kind == SeriesKind::kStackedBar) {
      out->append("<rect class=\"legend-swatch\" x=\"").append(Px(x + 4.0)).append("\" y=\"");
      out->append(Px(cy - 6.0)).append("\" width=\"14\" height=\"12\" fill=\"");
      out->append(EscapeXml(color)).append("\"/>\n");
    } else {
      out->append("<line class=\"legend-swatch\" x1=\"").append(Px(x)).append("\" y1=\"");
      out->append(Px(cy)).append("\" x2=\"").append(Px(x + kLegendSwatch)).append("\" y2=\"");
      out->append(Px(cy)).append("\" ").append(LineStyle(s, color)).append("/>\n");
      if (s.markers) {
        out->append("<circle class=\"legend-swatch\" cx=\"").append(Px(x + kLegendSwatch / 2.0));
        out->append("\" cy=\"").append(Px(cy)).append("\" r=\"").append(Px(MarkerRadius(s)));
        out->append("\" fill=\"").append(EscapeXml(color)).append("\"/>\n");
      }
    }
    AppendText(out, "legend-label", x + kLegendSwatch + kLegendGap, cy, kLegendSize, "start",
               s.label, "dy=\"0.35em\"");
  }
  if (!entries.empty()) out->append("</g>\n");
  out->append("</g>\n");
}

}  // namespace

double NiceStep(double lo, double hi, int max_intervals, double min_step) {
  return ComputeScale(lo, hi, max_intervals, min_step).step;
}

std::vector<double> NiceTicks(double lo, double hi, int max_intervals, double min_step) {
  return Ticks(ComputeScale(lo, hi, max_intervals, min_step));
}

std::string FormatNumber(double value, int max_decimals) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  max_decimals = std::clamp(max_decimals, 0, 17);
  char buf[400];
  const bool huge = std::abs(value) >= 1e21;
  const auto result =
      huge ? std::to_chars(buf, buf + sizeof(buf), value)
           : std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::fixed, max_decimals);
  std::string s(buf, result.ec == std::errc() ? result.ptr : buf);
  if (!huge && s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

std::string FormatTick(double value, double step) {
  int decimals = 0;
  if (std::isfinite(step) && step > 0.0) {
    decimals = std::clamp(static_cast<int>(std::ceil(-std::log10(step) - 1e-9)), 0, 15);
  }
  return FormatNumber(value, decimals);
}

std::string EscapeXml(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

double TextWidth(std::string_view text, double font_size) {
  return static_cast<double>(CodePoints(text)) * 0.6 * font_size;
}

PanelLayout LayoutPanel(const Chart& chart, double top, const Style& style) {
  PanelLayout layout;
  layout.top = top;
  const bool bars = HasBars(chart);

  // Data extents, from the series that set the range (or all, when none has data).
  Extent x_data;
  Extent y_data;
  auto collect = [&](bool range_only) {
    for (const Series& s : chart.series) {
      if (range_only && !s.sets_range) continue;
      if (s.kind != SeriesKind::kLine) continue;
      for (const Point& p : s.points) {
        if (!Finite(p)) continue;
        x_data.Add(p.x);
        y_data.Add(p.y);
      }
    }
    for (const Bar& bar : StackBars(chart)) {
      if (range_only && !chart.series[bar.series].sets_range) continue;
      // A stack starts at 0 (added below, without a margin) or at another part's end.
      x_data.Add(bar.x);
      y_data.Add(bar.to + bar.error);
      y_data.Add(bar.to - bar.error);
    }
  };
  collect(true);
  if (x_data.Empty()) collect(false);
  layout.has_data = !x_data.Empty();

  Extent x_range = x_data;
  Extent y_range = y_data;
  for (double v : chart.x_include) x_range.Add(v);
  for (double v : chart.y_include) y_range.Add(v);
  if (bars) y_range.Add(0.0);
  if (x_range.Empty()) x_range = {0.0, 1.0};
  if (y_range.Empty()) y_range = {0.0, 1.0};

  // The y tick labels decide the left margin, so lay out y first.
  const Scale ys = ComputeScale(y_range.lo, y_range.hi, kMaxYIntervals, 0.0);
  layout.y.step = ys.step;
  layout.y.ticks = Ticks(ys);
  // Data that would touch the frame gets a small margin beyond the end tick.
  Extent y_margined = y_data;
  for (double v : chart.y_include) y_margined.Add(v);
  const double y_margin = kRangeMargin * (layout.y.ticks.back() - layout.y.ticks.front());
  layout.y.lo = std::min(layout.y.ticks.front(), y_range.lo);
  layout.y.hi = std::max(layout.y.ticks.back(), y_range.hi);
  if (!y_margined.Empty()) {
    layout.y.lo = std::min(layout.y.lo, y_margined.lo - y_margin);
    layout.y.hi = std::max(layout.y.hi, y_margined.hi + y_margin);
  }
  // The data may reach +-1e308; the axis span must stay finite (NormalizeRange bounds
  // the ticks, this bounds the margins), or every coordinate becomes NaN.
  layout.y.lo = std::max(layout.y.lo, -kMaxAxisValue);
  layout.y.hi = std::min(layout.y.hi, kMaxAxisValue);
  double label_width = 0.0;
  for (double t : layout.y.ticks) {
    label_width = std::max(label_width, TextWidth(FormatTick(t, ys.step), kTickSize));
  }
  layout.plot_left = std::round(kMargin + kLabelSize + 10.0 + label_width + kTickLength + 6.0);
  layout.plot_top = top + kPlotTop;
  layout.plot_width = std::max(100.0, style.width - layout.plot_left - kRightMargin);
  layout.plot_height = std::max(60.0, style.plot_height);

  const int x_intervals =
      std::max(2, static_cast<int>(std::floor(layout.plot_width / kPixelsPerXInterval)));
  const Scale xs =
      ComputeScale(x_range.lo, x_range.hi, x_intervals, chart.integer_x_ticks ? 1.0 : 0.0);
  layout.x.step = xs.step;
  layout.x.ticks = Ticks(xs);
  layout.x.lo = std::min(layout.x.ticks.front(), x_range.lo);
  layout.x.hi = std::max(layout.x.ticks.back(), x_range.hi);
  if (!x_data.Empty()) {
    // Bars keep a bar width to the frame, markers a small margin.
    const double pad =
        bars ? chart.bar_width : kRangeMargin * (layout.x.ticks.back() - layout.x.ticks.front());
    layout.x.lo = std::min(layout.x.lo, x_data.lo - pad);
    layout.x.hi = std::max(layout.x.hi, x_data.hi + pad);
  }
  layout.x.lo = std::max(layout.x.lo, -kMaxAxisValue);
  layout.x.hi = std::min(layout.x.hi, kMaxAxisValue);
  layout.x.pixel_lo = layout.plot_left;
  layout.x.pixel_hi = layout.plot_left + layout.plot_width;
  layout.y.pixel_lo = layout.plot_top + layout.plot_height;
  layout.y.pixel_hi = layout.plot_top;

  const std::vector<LegendEntry> entries = LegendEntries(chart);
  double column_width = 0.0;
  for (const LegendEntry& e : entries) column_width = std::max(column_width, e.width);
  if (!entries.empty()) {
    const int fit = std::max(1, static_cast<int>(std::floor(layout.plot_width / column_width)));
    layout.legend_columns = std::min(fit, static_cast<int>(entries.size()));
    layout.legend_rows =
        static_cast<int>((entries.size() + static_cast<size_t>(layout.legend_columns) - 1) /
                         static_cast<size_t>(layout.legend_columns));
    layout.legend_column_width = column_width;
  }

  const double plot_bottom = layout.plot_top + layout.plot_height;
  const double bottom = layout.legend_rows > 0
                            ? plot_bottom + 58.0 + (layout.legend_rows - 1) * kLegendRow + 18.0
                            : plot_bottom + 48.0;
  layout.height = bottom - top;
  return layout;
}

std::string RenderSvg(const std::vector<Chart>& panels, const Style& style) {
  std::vector<PanelLayout> layouts;
  double height = 0.0;
  for (const Chart& chart : panels) {
    layouts.push_back(LayoutPanel(chart, height, style));
    height += layouts.back().height;
  }
  height = std::max(height, 40.0) + 6.0;

  std::string out;
  out.append("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  out.append("<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"");
  out.append(Px(style.width)).append("\" height=\"").append(Px(height));
  out.append("\" viewBox=\"0 0 ").append(Px(style.width)).append(" ").append(Px(height));
  out.append("\" font-family=\"DejaVu Sans, Verdana, Arial, Helvetica, sans-serif\">\n");
  std::string title;
  for (const Chart& chart : panels) {
    if (chart.title.empty()) continue;
    if (!title.empty()) title += "; ";
    title += chart.title;
  }
  out.append("<title>").append(EscapeXml(title)).append("</title>\n");
  out.append("<rect class=\"background\" x=\"0\" y=\"0\" width=\"").append(Px(style.width));
  out.append("\" height=\"").append(Px(height)).append("\" fill=\"#ffffff\"/>\n");
  for (size_t i = 0; i < panels.size(); ++i) AppendPanel(panels[i], layouts[i], i, &out);
  out.append("</svg>\n");
  return out;
}

}  // namespace epochal::report::svg
