#include "epochal/report/classification_report.h"

#include <algorithm>
#include <cstdio>
#include <string_view>

#include "epochal/core/error.h"

namespace epochal::report {
namespace {

double Ratio(double num, double den) { return den == 0.0 ? 0.0 : num / den; }

// `text` right-aligned in `width` columns, then one space (class names may be long, so
// no fixed-size buffer).
void AppendHeading(std::string_view text, size_t width, std::string* out) {
  if (text.size() < width) out->append(width - text.size(), ' ');
  out->append(text);
  out->push_back(' ');
}

// One row: name right-aligned in `width`, three 9-wide two-decimal columns and the
// support, as scikit-learn's "{:>{width}s} " + " {:>9.2f}" * 3 + " {:>9}".
void AppendRow(std::string_view name, const double (&values)[3], int64_t support, size_t width,
               std::string* out) {
  AppendHeading(name, width, out);
  char buf[64];
  for (double v : values) {
    std::snprintf(buf, sizeof(buf), " %9.2f", v);
    out->append(buf);
  }
  std::snprintf(buf, sizeof(buf), " %9lld\n", static_cast<long long>(support));
  out->append(buf);
}

}  // namespace

std::vector<ClassScores> ComputeClassScores(const std::vector<int64_t>& confusion,
                                            int num_classes) {
  if (num_classes <= 0) {
    throw InputError(
        detail::StrCat("classification report: need at least one class, got ", num_classes));
  }
  const auto k = static_cast<size_t>(num_classes);
  if (confusion.size() != k * k) {
    throw InputError(detail::StrCat("classification report: confusion matrix has ",
                                    confusion.size(), " entries, expected ", k, "x", k));
  }
  if (std::any_of(confusion.begin(), confusion.end(), [](int64_t c) { return c < 0; })) {
    throw InputError("classification report: negative count in confusion matrix");
  }
  std::vector<ClassScores> scores(k);
  for (size_t c = 0; c < k; ++c) {
    int64_t row = 0;
    int64_t col = 0;
    for (size_t j = 0; j < k; ++j) {
      row += confusion[c * k + j];
      col += confusion[j * k + c];
    }
    const auto tp = static_cast<double>(confusion[c * k + c]);
    ClassScores& s = scores[c];
    s.support = row;
    s.precision = Ratio(tp, static_cast<double>(col));
    s.recall = Ratio(tp, static_cast<double>(row));
    s.f1 = Ratio(2.0 * s.precision * s.recall, s.precision + s.recall);
  }
  return scores;
}

std::string ClassificationReport(const std::vector<int64_t>& confusion,
                                 const std::vector<std::string>& class_names) {
  const std::vector<ClassScores> scores =
      ComputeClassScores(confusion, static_cast<int>(class_names.size()));
  const size_t k = class_names.size();

  constexpr std::string_view kLongestHeading = "weighted avg";
  size_t name_width = kLongestHeading.size();
  for (const std::string& name : class_names) name_width = std::max(name_width, name.size());
  const size_t width = name_width;

  std::string out;
  char buf[128];
  AppendHeading("", width, &out);
  std::snprintf(buf, sizeof(buf), " %9s %9s %9s %9s\n\n", "precision", "recall", "f1-score",
                "support");
  out.append(buf);

  int64_t total = 0;
  int64_t correct = 0;
  double macro[3] = {0.0, 0.0, 0.0};
  double weighted[3] = {0.0, 0.0, 0.0};
  for (size_t c = 0; c < k; ++c) {
    const ClassScores& s = scores[c];
    const double values[3] = {s.precision, s.recall, s.f1};
    AppendRow(class_names[c], values, s.support, width, &out);
    total += s.support;
    correct += confusion[c * k + c];
    for (int i = 0; i < 3; ++i) {
      macro[i] += values[i];
      weighted[i] += values[i] * static_cast<double>(s.support);
    }
  }
  for (double& m : macro) m /= static_cast<double>(k);
  for (double& w : weighted) w = Ratio(w, static_cast<double>(total));
  out.push_back('\n');

  // scikit-learn leaves the precision and recall cells of the accuracy row blank.
  const double accuracy = Ratio(static_cast<double>(correct), static_cast<double>(total));
  AppendHeading("accuracy", width, &out);
  std::snprintf(buf, sizeof(buf), " %9s %9s %9.2f %9lld\n", "", "", accuracy,
                static_cast<long long>(total));
  out.append(buf);
  AppendRow("macro avg", macro, total, width, &out);
  AppendRow("weighted avg", weighted, total, width, &out);
  return out;
}

}  // namespace epochal::report
