#include "epochal/report/plots.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "epochal/report/svg_plot.h"
#include "temp_dir.h"

namespace epochal::report {
namespace {

using testing::ReadFile;
using testing::TempDir;

// ---- A tiny XML reader, enough for the documents svg_plot writes. ----

// Empty when every opened tag is closed in order, there is exactly one root element, and
// every '&' starts a known entity; otherwise what is wrong.
std::string CheckWellFormed(const std::string& xml) {
  std::vector<std::string> open;
  int roots = 0;
  size_t i = 0;
  while (i < xml.size()) {
    if (xml[i] == '&') {
      static const char* kEntities[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
      const bool known =
          std::any_of(std::begin(kEntities), std::end(kEntities),
                      [&](const char* e) { return xml.compare(i, strlen(e), e) == 0; });
      if (!known) return "bare '&' at " + std::to_string(i);
      ++i;
      continue;
    }
    if (xml[i] == '>') return "bare '>' at " + std::to_string(i);
    if (xml[i] != '<') {
      ++i;
      continue;
    }
    if (xml.compare(i, 2, "<?") == 0) {
      const size_t end = xml.find("?>", i);
      if (end == std::string::npos) return "unterminated <?";
      i = end + 2;
      continue;
    }
    if (xml.compare(i, 4, "<!--") == 0) {
      const size_t end = xml.find("-->", i);
      if (end == std::string::npos) return "unterminated comment";
      i = end + 3;
      continue;
    }
    // A tag: find its '>' outside quoted attribute values.
    size_t end = i + 1;
    char quote = 0;
    for (; end < xml.size(); ++end) {
      const char c = xml[end];
      if (quote != 0) {
        if (c == '<') return "'<' inside an attribute at " + std::to_string(end);
        if (c == quote) quote = 0;
      } else if (c == '"' || c == '\'') {
        quote = c;
      } else if (c == '<') {
        return "'<' inside a tag at " + std::to_string(end);
      } else if (c == '>') {
        break;
      }
    }
    if (end >= xml.size()) return "unterminated tag at " + std::to_string(i);
    const std::string tag = xml.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (open.empty()) return "close of unopened </" + name + ">";
      if (open.back() != name) return "</" + name + "> closes <" + open.back() + ">";
      open.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
    if (open.empty()) ++roots;
    if (tag.back() != '/') open.push_back(name);
  }
  if (!open.empty()) return "<" + open.back() + "> never closed";
  if (roots != 1) return std::to_string(roots) + " root elements";
  return "";
}

// The start tags (text between '<' and '>') of every `element` whose class is `cls`
// (any class when empty), in document order.
std::vector<std::string> Tags(const std::string& xml, const std::string& element,
                              const std::string& cls = "") {
  std::vector<std::string> tags;
  const std::string open = "<" + element + " ";
  for (size_t pos = xml.find(open); pos != std::string::npos; pos = xml.find(open, pos + 1)) {
    const std::string tag = xml.substr(pos + 1, xml.find('>', pos) - pos - 1);
    if (cls.empty() || tag.find("class=\"" + cls + "\"") != std::string::npos) tags.push_back(tag);
  }
  return tags;
}

std::string Attr(const std::string& tag, const std::string& name) {
  const std::string needle = " " + name + "=\"";
  const size_t pos = tag.find(needle);
  if (pos == std::string::npos) return "";
  const size_t start = pos + needle.size();
  return tag.substr(start, tag.find('"', start) - start);
}

double NumAttr(const std::string& tag, const std::string& name) {
  const std::string value = Attr(tag, name);
  EXPECT_FALSE(value.empty()) << name << " missing in <" << tag << ">";
  return std::strtod(value.c_str(), nullptr);
}

std::vector<svg::Point> PolylinePoints(const std::string& tag) {
  std::vector<svg::Point> points;
  const std::string list = Attr(tag, "points");
  const char* p = list.c_str();
  while (*p != '\0') {
    char* end = nullptr;
    svg::Point pt;
    pt.x = std::strtod(p, &end);
    EXPECT_EQ(*end, ',') << list;
    pt.y = std::strtod(end + 1, &end);
    points.push_back(pt);
    p = end;
    while (*p == ' ') ++p;
  }
  return points;
}

// The polyline of the series labelled `label`; fails when there is not exactly one.
std::string Polyline(const std::string& xml, std::string_view label) {
  std::vector<std::string> found;
  for (const std::string& tag : Tags(xml, "polyline", "line")) {
    if (Attr(tag, "data-series") == svg::EscapeXml(label)) found.push_back(tag);
  }
  EXPECT_EQ(found.size(), 1u) << label;
  return found.empty() ? "" : found.front();
}

// The panels of a document, each as its own text.
std::vector<std::string> Panels(const std::string& xml) {
  std::vector<std::string> panels;
  const std::string open = "<g class=\"panel\">";
  for (size_t pos = xml.find(open); pos != std::string::npos;) {
    const size_t next = xml.find(open, pos + 1);
    panels.push_back(xml.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    pos = next;
  }
  return panels;
}

// A tick label's value and pixel position.
struct TickLabel {
  double value = 0.0;
  double pixel = 0.0;
};

std::vector<TickLabel> TickLabels(const std::string& xml, const std::string& cls) {
  std::vector<TickLabel> ticks;
  const std::string open = "<text class=\"" + cls + "\"";
  for (size_t pos = xml.find(open); pos != std::string::npos; pos = xml.find(open, pos + 1)) {
    const size_t close = xml.find('>', pos);
    const std::string tag = xml.substr(pos + 1, close - pos - 1);
    const std::string text = xml.substr(close + 1, xml.find('<', close) - close - 1);
    ticks.push_back(
        {std::strtod(text.c_str(), nullptr), NumAttr(tag, cls == "x-tick" ? "x" : "y")});
  }
  return ticks;
}

// The pixel of `value` on the axis the tick labels describe (linear through the first and
// last label).
double PixelOf(const std::vector<TickLabel>& ticks, double value) {
  EXPECT_GE(ticks.size(), 2u);
  const TickLabel& a = ticks.front();
  const TickLabel& b = ticks.back();
  return a.pixel + (value - a.value) / (b.value - a.value) * (b.pixel - a.pixel);
}

// Whether a number printed in the document is "nan" or "inf".
bool HasNonFiniteNumber(const std::string& xml) {
  static const std::regex kNonFinite(R"([=" ,>]-?(nan|inf)[" ,<])");
  return std::regex_search(xml, kNonFinite);
}

bool IsNiceStep(double step) {
  const double e = std::floor(std::log10(step) + 1e-12);
  const double mantissa = step / std::pow(10.0, e);
  return std::abs(mantissa - 1) < 1e-9 || std::abs(mantissa - 2) < 1e-9 ||
         std::abs(mantissa - 5) < 1e-9;
}

// ---- Histories ----

// The article's first five epochs, with gap terms summing to val_loss - loss, the
// aligned loss for all but the last epoch and 40 logged batches an epoch.
train::History FiveEpochs() {
  const double loss[] = {0.5433, 0.3396, 0.2941, 0.2717, 0.2534};
  const double val[] = {0.3281, 0.2726, 0.2722, 0.2334, 0.2245};
  const double timing[] = {-0.150, -0.030, -0.018, -0.012, -0.010};
  const double regularization[] = {-0.045, -0.040, -0.035, -0.032, -0.030};
  train::History h;
  for (int i = 0; i < 5; ++i) {
    train::EpochRecord e;
    e.epoch = i + 1;
    e.loss = loss[i];
    e.val_loss = val[i];
    e.gap_timing = timing[i];
    e.gap_regularization = regularization[i];
    e.gap_dropout = 0.8 * regularization[i];
    e.gap_batchnorm = 0.2 * regularization[i];
    e.gap_data = val[i] - loss[i] - timing[i] - regularization[i];
    e.probe_train_loss = loss[i] + timing[i];
    e.probe_nodrop_loss = *e.probe_train_loss + *e.gap_dropout;
    e.probe_eval_loss = *e.probe_train_loss + regularization[i];
    e.gap_timing_se = 0.006;
    e.gap_dropout_se = 0.002;
    e.gap_batchnorm_se = 0.001;
    e.gap_data_se = 0.005;
    if (i < 4) e.aligned_train_loss = (loss[i] + loss[i + 1]) / 2.0;
    h.epochs.push_back(e);
  }
  for (int step = 1; step <= 5 * 40; ++step) {
    const double progress = step / 40.0;
    h.batches.push_back({.epoch_progress = progress, .loss = 0.2 + 0.4 / progress, .lr = 0.01});
  }
  return h;
}

// ---- svg_plot.h ----

svg::Series LineSeries(std::string label, std::vector<svg::Point> points) {
  svg::Series s;
  s.label = std::move(label);
  s.points = std::move(points);
  return s;
}

svg::Series BarSeries(std::string label, std::vector<svg::Point> points) {
  svg::Series s = LineSeries(std::move(label), std::move(points));
  s.kind = svg::SeriesKind::kStackedBar;
  return s;
}

TEST(SvgPlotTest, NiceTicksUseOneTwoFiveStepsAndCoverTheRange) {
  const double ranges[][2] = {
      {0.1734, 0.5433}, {-0.2152, 0.0377}, {0, 25}, {1, 5}, {1e-5, 3e-5},    {-7, -2},
      {0, 1e6},         {0.999, 1.001},    {3, 3},  {0, 0}, {-1e300, 1e300}, {2e-300, 3e-300}};
  for (const auto& r : ranges) {
    for (int max_intervals : {4, 6, 10}) {
      const std::vector<double> ticks = svg::NiceTicks(r[0], r[1], max_intervals);
      const double step = svg::NiceStep(r[0], r[1], max_intervals);
      SCOPED_TRACE(std::to_string(r[0]) + ".." + std::to_string(r[1]));
      ASSERT_GE(ticks.size(), 2u);
      EXPECT_LE(static_cast<int>(ticks.size()) - 1, max_intervals);
      EXPECT_TRUE(IsNiceStep(step)) << step;
      EXPECT_LE(ticks.front(), r[0] + 1e-12 * std::abs(r[0]));
      EXPECT_GE(ticks.back(), r[1] - 1e-12 * std::abs(r[1]));
      for (size_t i = 0; i < ticks.size(); ++i) {
        EXPECT_NEAR(ticks[i] / step, std::round(ticks[i] / step), 1e-9) << ticks[i];
        if (i > 0) {
          EXPECT_NEAR(ticks[i] - ticks[i - 1], step, step * 1e-9);
        }
      }
    }
  }
}

TEST(SvgPlotTest, NiceTicksAreTheDecimalsTheyStandFor) {
  EXPECT_EQ(svg::NiceTicks(0.1734, 0.5433), (std::vector<double>{0.1, 0.2, 0.3, 0.4, 0.5, 0.6}));
  EXPECT_EQ(svg::NiceTicks(-0.2152, 0.0377),
            (std::vector<double>{-0.25, -0.2, -0.15, -0.1, -0.05, 0.0, 0.05}));
  EXPECT_EQ(svg::NiceTicks(0, 25), (std::vector<double>{0, 5, 10, 15, 20, 25}));
  // An integer minimum step keeps epochs whole.
  EXPECT_EQ(svg::NiceTicks(0, 2, 8, 1.0), (std::vector<double>{0, 1, 2}));
  EXPECT_EQ(svg::FormatTick(0.15, 0.05), "0.15");
  EXPECT_EQ(svg::FormatTick(0.1, 0.05), "0.1");
  EXPECT_EQ(svg::FormatTick(-0.25, 0.05), "-0.25");
  EXPECT_EQ(svg::FormatTick(20, 5), "20");
  EXPECT_EQ(svg::FormatTick(0.00002, 0.00001), "0.00002");
}

TEST(SvgPlotTest, FormatNumberIsCompactAndFixed) {
  EXPECT_EQ(svg::FormatNumber(0.25, 2), "0.25");
  EXPECT_EQ(svg::FormatNumber(3.0, 2), "3");
  EXPECT_EQ(svg::FormatNumber(-0.001, 2), "0");
  EXPECT_EQ(svg::FormatNumber(0.1 + 0.2, 6), "0.3");
  EXPECT_EQ(svg::FormatNumber(1234.5678, 2), "1234.57");
  EXPECT_EQ(svg::FormatNumber(-12.5, 0), "-12");  // Round half to even, as printf does.
  EXPECT_EQ(svg::FormatNumber(std::numeric_limits<double>::quiet_NaN(), 2), "nan");
  EXPECT_EQ(svg::FormatNumber(-std::numeric_limits<double>::infinity(), 2), "-inf");
}

TEST(SvgPlotTest, EscapesTextForXml) {
  svg::Chart chart;
  chart.title = "loss <&> 'x' \"y\"";
  chart.x_label = "a<b";
  chart.series.push_back(LineSeries("p&q", {{0, 1}, {1, 2}}));
  const std::string doc = svg::RenderSvg({chart});
  EXPECT_EQ(CheckWellFormed(doc), "");
  EXPECT_NE(doc.find("loss &lt;&amp;&gt; &apos;x&apos; &quot;y&quot;"), std::string::npos);
  EXPECT_NE(doc.find(">a&lt;b</text>"), std::string::npos);
  EXPECT_NE(doc.find("data-series=\"p&amp;q\""), std::string::npos);
  EXPECT_EQ(doc.find("<&>"), std::string::npos);
  EXPECT_EQ(svg::EscapeXml("<&>\"'ok"), "&lt;&amp;&gt;&quot;&apos;ok");
}

TEST(SvgPlotTest, OutputIsDeterministic) {
  const train::History h = FiveEpochs();
  EXPECT_EQ(LossShiftSvg(h), LossShiftSvg(h));
  EXPECT_EQ(GapSvg(h), GapSvg(h));
}

TEST(SvgPlotTest, StackedBarsGoUpFromZeroAndDownFromZero) {
  svg::Chart chart;
  chart.series.push_back(BarSeries("a", {{1, 0.3}, {2, -0.2}, {3, 0.1}}));
  chart.series.push_back(BarSeries("b", {{1, 0.2}, {2, -0.1}, {3, -0.4}}));
  const std::string doc = svg::RenderSvg({chart});
  ASSERT_EQ(CheckWellFormed(doc), "");
  const std::vector<std::string> zero = Tags(doc, "line", "zero-line");
  ASSERT_EQ(zero.size(), 1u);
  const double zero_y = NumAttr(zero[0], "y1");
  const std::vector<std::string> bars = Tags(doc, "rect", "bar");
  ASSERT_EQ(bars.size(), 6u);
  // Per x: the extent the positive and negative parts reached so far.
  std::map<std::string, std::pair<double, double>> stack;
  for (const std::string& bar : bars) {
    const double value = NumAttr(bar, "data-value");
    const double top = NumAttr(bar, "y");
    const double bottom = top + NumAttr(bar, "height");
    auto [it, inserted] = stack.try_emplace(Attr(bar, "data-x"), zero_y, zero_y);
    if (value > 0) {
      EXPECT_LE(bottom, zero_y + 0.01) << bar;
      EXPECT_NEAR(bottom, it->second.first, 0.011) << "stacks on the previous positive part";
      it->second.first = top;
    } else {
      EXPECT_GE(top, zero_y - 0.01) << bar;
      EXPECT_NEAR(top, it->second.second, 0.011) << "hangs below the previous negative part";
      it->second.second = bottom;
    }
  }
  // The y ticks cover the stacked extremes 0.5 and -0.4.
  const svg::PanelLayout layout = svg::LayoutPanel(chart, 0);
  EXPECT_LE(layout.y.ticks.front(), -0.4);
  EXPECT_GE(layout.y.ticks.back(), 0.5);
  EXPECT_NEAR(layout.y.ToPixel(0.0), zero_y, 0.01);
}

TEST(SvgPlotTest, LegendHasEveryLabelledSeries) {
  svg::Chart chart;
  chart.series.push_back(LineSeries("first", {{0, 1}}));
  chart.series.push_back(LineSeries("", {{0, 2}}));
  chart.series.push_back(BarSeries("third", {{0, 1}}));
  const std::string doc = svg::RenderSvg({chart});
  const std::vector<std::string> labels = Tags(doc, "text", "legend-label");
  ASSERT_EQ(labels.size(), 2u);
  EXPECT_NE(doc.find(">first</text>"), std::string::npos);
  EXPECT_NE(doc.find(">third</text>"), std::string::npos);
  // The legend sits below the plot area, never over the data.
  const svg::PanelLayout layout = svg::LayoutPanel(chart, 0);
  for (const std::string& label : labels) {
    EXPECT_GT(NumAttr(label, "y"), layout.plot_top + layout.plot_height + 20);
    EXPECT_LT(NumAttr(label, "y"), layout.top + layout.height);
  }
}

TEST(SvgPlotTest, EmptyChartSaysNoData) {
  svg::Chart chart;
  chart.title = "nothing";
  const std::string doc = svg::RenderSvg({chart});
  EXPECT_EQ(CheckWellFormed(doc), "");
  ASSERT_EQ(Tags(doc, "text", "note").size(), 1u);
  EXPECT_NE(doc.find(">no data</text>"), std::string::npos);
  EXPECT_EQ(CheckWellFormed(svg::RenderSvg({})), "");
}

TEST(SvgPlotTest, NonFiniteValuesBreakTheLine) {
  svg::Chart chart;
  chart.series.push_back(
      LineSeries("s", {{1, 1}, {2, std::numeric_limits<double>::quiet_NaN()}, {3, 2}, {4, 3}}));
  const std::string doc = svg::RenderSvg({chart});
  EXPECT_EQ(CheckWellFormed(doc), "");
  const std::vector<std::string> lines = Tags(doc, "polyline", "line");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(PolylinePoints(lines[0]).size(), 1u);
  EXPECT_EQ(PolylinePoints(lines[1]).size(), 2u);
  EXPECT_FALSE(HasNonFiniteNumber(doc));
}

// ---- plots.h ----

TEST(PlotsTest, LossShiftIsWellFormedWithTwoPanels) {
  const std::string doc = LossShiftSvg(FiveEpochs());
  EXPECT_EQ(CheckWellFormed(doc), "");
  EXPECT_EQ(doc.rfind("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg ", 0), 0u);
  EXPECT_EQ(Panels(doc).size(), 2u);
  EXPECT_NE(doc.find(">Training and validation loss</text>"), std::string::npos);
  EXPECT_NE(doc.find(">Training loss shifted left by half an epoch</text>"), std::string::npos);
  EXPECT_EQ(Tags(doc, "text", "x-label").size(), 2u);
  EXPECT_NE(doc.find(">epoch</text>"), std::string::npos);
  EXPECT_NE(doc.find(">loss</text>"), std::string::npos);
}

TEST(PlotsTest, LossShiftHasOnePolylinePointPerEpoch) {
  const std::vector<std::string> panels = Panels(LossShiftSvg(FiveEpochs()));
  ASSERT_EQ(panels.size(), 2u);
  EXPECT_EQ(PolylinePoints(Polyline(panels[0], kTrainLossLabel)).size(), 5u);
  EXPECT_EQ(PolylinePoints(Polyline(panels[0], kValLossLabel)).size(), 5u);
  // 40 batches an epoch, two per 1/20-epoch window.
  EXPECT_EQ(PolylinePoints(Polyline(panels[0], kBatchLossLabel)).size(), 100u);
  EXPECT_EQ(PolylinePoints(Polyline(panels[1], kShiftedTrainLossLabel)).size(), 5u);
  EXPECT_EQ(PolylinePoints(Polyline(panels[1], kValLossLabel)).size(), 5u);
  // The last epoch has no aligned loss yet.
  EXPECT_EQ(PolylinePoints(Polyline(panels[1], kAlignedTrainLossLabel)).size(), 4u);
  // One marker per epoch-level point: 5 + 5 in the top panel, 5 + 5 + 4 below.
  EXPECT_EQ(Tags(panels[0], "circle", "marker").size(), 10u);
  EXPECT_EQ(Tags(panels[1], "circle", "marker").size(), 14u);
}

TEST(PlotsTest, ShiftedCurveStartsHalfAnEpochEarlierOnTheAxis) {
  const train::History h = FiveEpochs();
  const std::vector<std::string> panels = Panels(LossShiftSvg(h));
  ASSERT_EQ(panels.size(), 2u);
  for (const std::string& panel : panels) {
    const std::vector<TickLabel> x_ticks = TickLabels(panel, "x-tick");
    const std::vector<TickLabel> y_ticks = TickLabels(panel, "y-tick");
    ASSERT_GE(x_ticks.size(), 2u);
    ASSERT_GE(y_ticks.size(), 2u);
    const bool shifted = panel == panels[1];
    const std::vector<svg::Point> train =
        PolylinePoints(Polyline(panel, shifted ? kShiftedTrainLossLabel : kTrainLossLabel));
    ASSERT_EQ(train.size(), 5u);
    for (size_t i = 0; i < train.size(); ++i) {
      const double epoch = static_cast<double>(i + 1) - (shifted ? 0.5 : 0.0);
      EXPECT_NEAR(train[i].x, PixelOf(x_ticks, epoch), 0.02) << i;
      EXPECT_NEAR(train[i].y, PixelOf(y_ticks, h.epochs[i].loss), 0.02) << i;
    }
    // Validation stays at the epoch boundary in both panels.
    const std::vector<svg::Point> val = PolylinePoints(Polyline(panel, kValLossLabel));
    ASSERT_EQ(val.size(), 5u);
    EXPECT_NEAR(val[0].x, PixelOf(x_ticks, 1.0), 0.02);
    EXPECT_NEAR(val[0].y, PixelOf(y_ticks, h.epochs[0].val_loss), 0.02);
  }
  // The panels share the x axis, so epoch 0.5 below is half-way to epoch 1 above.
  const double top_epoch1 = PolylinePoints(Polyline(panels[0], kTrainLossLabel))[0].x;
  const double bottom_first = PolylinePoints(Polyline(panels[1], kShiftedTrainLossLabel))[0].x;
  const std::vector<TickLabel> x_ticks = TickLabels(panels[0], "x-tick");
  EXPECT_NEAR(bottom_first, (PixelOf(x_ticks, 0.0) + top_epoch1) / 2.0, 0.02);
}

TEST(PlotsTest, LossTicksAreNiceAndCoverTheLosses) {
  const train::History h = FiveEpochs();
  for (const svg::Chart& chart : LossShiftCharts(h)) {
    const svg::PanelLayout layout = svg::LayoutPanel(chart, 0);
    EXPECT_TRUE(IsNiceStep(layout.y.step));
    EXPECT_TRUE(IsNiceStep(layout.x.step));
    EXPECT_GE(layout.x.step, 1.0);
    EXPECT_LE(layout.y.ticks.front(), 0.2245);
    EXPECT_GE(layout.y.ticks.back(), 0.5433);
    EXPECT_LE(layout.x.ticks.front(), 0.0);
    EXPECT_GE(layout.x.ticks.back(), 5.0);
    for (double t : layout.y.ticks) {
      EXPECT_NEAR(t / layout.y.step, std::round(t / layout.y.step), 1e-9);
    }
  }
  // The labels printed are those ticks.
  const std::vector<TickLabel> y_ticks = TickLabels(Panels(LossShiftSvg(h))[0], "y-tick");
  ASSERT_EQ(y_ticks.size(), 5u);
  EXPECT_DOUBLE_EQ(y_ticks.front().value, 0.2);
  EXPECT_DOUBLE_EQ(y_ticks.back().value, 0.6);
}

TEST(PlotsTest, BatchLineIsTheMeanOverTwentiethsOfAnEpoch) {
  const train::History h = FiveEpochs();
  const std::vector<svg::Chart> charts = LossShiftCharts(h);
  ASSERT_EQ(charts[0].series.size(), 3u);
  const svg::Series& batches = charts[0].series[2];
  ASSERT_EQ(batches.label, kBatchLossLabel);
  EXPECT_FALSE(batches.sets_range);
  ASSERT_EQ(batches.points.size(), 100u);
  // Window 0 = (0, 0.05] holds the steps at 1/40 and 2/40.
  EXPECT_DOUBLE_EQ(batches.points[0].x,
                   (h.batches[0].epoch_progress + h.batches[1].epoch_progress) / 2);
  EXPECT_DOUBLE_EQ(batches.points[0].y, (h.batches[0].loss + h.batches[1].loss) / 2);
  // Early per-batch losses (up to 8.2 here) do not stretch the loss axis.
  EXPECT_LE(svg::LayoutPanel(charts[0], 0).y.hi, 0.6);
}

TEST(PlotsTest, LegendLabelsArePresent) {
  const train::History h = FiveEpochs();
  const std::string loss = LossShiftSvg(h);
  for (std::string_view label : {kTrainLossLabel, kValLossLabel, kBatchLossLabel,
                                 kShiftedTrainLossLabel, kAlignedTrainLossLabel}) {
    EXPECT_NE(loss.find(">" + svg::EscapeXml(label) + "</text>"), std::string::npos) << label;
  }
  const std::string gap = GapSvg(h);
  for (std::string_view label :
       {kTimingLabel, kDropoutLabel, kBatchNormLabel, kDataLabel, kTotalGapLabel}) {
    EXPECT_NE(gap.find(">" + svg::EscapeXml(label) + "</text>"), std::string::npos) << label;
  }
  EXPECT_EQ(Tags(gap, "text", "legend-label").size(), 5u);
}

// Each bar segment carries its standard error as a whisker; a term the model cannot have
// is left out, with its legend entry.
TEST(PlotsTest, GapBarsCarryErrorBarsAndAbsentTermsAreLeftOut) {
  train::History h = FiveEpochs();
  std::string gap = GapSvg(h);
  ASSERT_EQ(CheckWellFormed(gap), "");
  EXPECT_EQ(Tags(gap, "g", "error-bar").size(), 20u);  // 5 epochs x 4 terms
  EXPECT_NE(gap.find("data-error=\"0.006\""), std::string::npos);
  h.absent_terms = {"batchnorm"};
  for (auto& e : h.epochs) e.gap_batchnorm = 0.0, e.gap_batchnorm_se = 0.0;
  gap = GapSvg(h);
  EXPECT_EQ(gap.find(svg::EscapeXml(kBatchNormLabel)), std::string::npos);
  EXPECT_EQ(Tags(gap, "rect", "bar").size(), 15u);
  EXPECT_EQ(Tags(gap, "g", "error-bar").size(), 15u);
}

TEST(PlotsTest, GapBarsStackAboveAndBelowTheZeroLine) {
  const train::History h = FiveEpochs();
  const std::string doc = GapSvg(h);
  ASSERT_EQ(CheckWellFormed(doc), "");
  EXPECT_NE(doc.find(">Why validation loss differs from training loss</text>"), std::string::npos);
  const std::vector<std::string> zero = Tags(doc, "line", "zero-line");
  ASSERT_EQ(zero.size(), 1u);
  const double zero_y = NumAttr(zero[0], "y1");
  const std::vector<std::string> bars = Tags(doc, "rect", "bar");
  ASSERT_EQ(bars.size(), 20u);
  int positive = 0;
  int negative = 0;
  for (const std::string& bar : bars) {
    const double value = NumAttr(bar, "data-value");
    const double top = NumAttr(bar, "y");
    const double bottom = top + NumAttr(bar, "height");
    if (value > 0) {
      ++positive;
      EXPECT_LE(bottom, zero_y + 0.01) << bar;
    } else {
      ++negative;
      EXPECT_GE(top, zero_y - 0.01) << bar;
    }
  }
  EXPECT_GT(positive, 0);
  EXPECT_GT(negative, 0);
  // The total is a line with a point per epoch, at val_loss - loss on the y axis.
  const std::vector<svg::Point> total = PolylinePoints(Polyline(doc, kTotalGapLabel));
  ASSERT_EQ(total.size(), 5u);
  const std::vector<TickLabel> y_ticks = TickLabels(doc, "y-tick");
  EXPECT_NEAR(total[0].y, PixelOf(y_ticks, h.epochs[0].val_loss - h.epochs[0].loss), 0.02);
}

TEST(PlotsTest, GapSkipsEpochsWithoutTheTerms) {
  train::History h = FiveEpochs();
  h.epochs[2].gap_data.reset();
  const std::string doc = GapSvg(h);
  EXPECT_EQ(CheckWellFormed(doc), "");
  EXPECT_EQ(Tags(doc, "rect", "bar").size(), 16u);  // 4 epochs x 4 terms
  for (const std::string& bar : Tags(doc, "rect", "bar")) EXPECT_NE(Attr(bar, "data-x"), "3");
  EXPECT_EQ(PolylinePoints(Polyline(doc, kTotalGapLabel)).size(), 4u);
}

TEST(PlotsTest, EmptyHistoryGivesValidDocumentsSayingNoData) {
  const train::History empty;
  for (const std::string& doc : {LossShiftSvg(empty), GapSvg(empty)}) {
    EXPECT_EQ(CheckWellFormed(doc), "");
    EXPECT_NE(doc.find("no data"), std::string::npos);
    EXPECT_TRUE(Tags(doc, "polyline").empty());
    EXPECT_TRUE(Tags(doc, "rect", "bar").empty());
  }
  EXPECT_EQ(Panels(LossShiftSvg(empty)).size(), 2u);
  // Epochs without probes: the loss plot works, the gap plot says why it is empty.
  train::History no_probes = FiveEpochs();
  for (train::EpochRecord& e : no_probes.epochs) e.gap_timing.reset();
  no_probes.batches.clear();
  EXPECT_EQ(CheckWellFormed(LossShiftSvg(no_probes)), "");
  EXPECT_NE(GapSvg(no_probes).find("no data"), std::string::npos);
}

TEST(PlotsTest, NonFiniteLossesDoNotBreakTheDocument) {
  train::History h = FiveEpochs();
  h.epochs[1].val_loss = std::numeric_limits<double>::quiet_NaN();
  h.epochs[3].loss = std::numeric_limits<double>::infinity();
  for (const std::string& doc : {LossShiftSvg(h), GapSvg(h)}) {
    EXPECT_EQ(CheckWellFormed(doc), "");
    EXPECT_FALSE(HasNonFiniteNumber(doc));
  }
}

TEST(PlotsTest, WritePlotsWritesBothFiles) {
  TempDir dir;
  const train::History h = FiveEpochs();
  WritePlots(h, dir.path());
  EXPECT_EQ(ReadFile(dir.path() / "loss_shift.svg"), LossShiftSvg(h));
  EXPECT_EQ(ReadFile(dir.path() / "gap.svg"), GapSvg(h));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "loss_shift.svg.tmp"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "gap.svg.tmp"));
}

}  // namespace
}  // namespace epochal::report
