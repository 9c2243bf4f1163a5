// Per-class precision, recall, F1 and support from a confusion matrix, and the text
// report in scikit-learn's `classification_report` layout (digits = 2):
//
//                 precision    recall  f1-score   support
//
//          top       0.87      0.91      0.89      1000
//          ...
//
//     accuracy                           0.93     10000
//    macro avg       0.93      0.93      0.93     10000
// weighted avg       0.93      0.93      0.93     10000
//
// A ratio with a zero denominator (a class never predicted, or with no support) is 0,
// as scikit-learn's default zero_division gives.
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace epochal::report {

struct ClassScores {
  double precision = 0.0;
  double recall = 0.0;
  double f1 = 0.0;
  int64_t support = 0;  // samples whose true label is the class
};

// `confusion` is K*K row-major: row = true label, column = predicted label; entries >= 0.
// Throws epochal::InputError when the size is not num_classes^2 (num_classes > 0) or an
// entry is negative.
std::vector<ClassScores> ComputeClassScores(const std::vector<int64_t>& confusion, int num_classes);

// The report text (ends with a newline); class_names.size() gives K.
std::string ClassificationReport(const std::vector<int64_t>& confusion,
                                 const std::vector<std::string>& class_names);

}  // namespace epochal::report
