#include "epochal/report/classification_report.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "epochal/core/error.h"

namespace epochal::report {
namespace {

// Rows are true labels, columns predictions.
//            pred cat  dog  bird   support
//   cat           5     1     0       6
//   dog           2     3     1       6
//   bird          0     0     4       4
//   predicted     7     4     5      16
const std::vector<int64_t> kConfusion = {5, 1, 0, 2, 3, 1, 0, 0, 4};
const std::vector<std::string> kNames = {"cat", "dog", "bird"};

TEST(ClassificationReportTest, ScoresMatchHandComputation) {
  const std::vector<ClassScores> s = ComputeClassScores(kConfusion, 3);
  ASSERT_EQ(s.size(), 3u);
  // cat: P = 5/7, R = 5/6, F1 = 2*5 / (7 + 6) = 10/13.
  EXPECT_DOUBLE_EQ(s[0].precision, 5.0 / 7.0);
  EXPECT_DOUBLE_EQ(s[0].recall, 5.0 / 6.0);
  EXPECT_DOUBLE_EQ(s[0].f1, 10.0 / 13.0);
  EXPECT_EQ(s[0].support, 6);
  // dog: P = 3/4, R = 3/6, F1 = 6/10.
  EXPECT_DOUBLE_EQ(s[1].precision, 0.75);
  EXPECT_DOUBLE_EQ(s[1].recall, 0.5);
  EXPECT_DOUBLE_EQ(s[1].f1, 0.6);
  // bird: P = 4/5, R = 4/4, F1 = 8/9.
  EXPECT_DOUBLE_EQ(s[2].precision, 0.8);
  EXPECT_DOUBLE_EQ(s[2].recall, 1.0);
  EXPECT_DOUBLE_EQ(s[2].f1, 8.0 / 9.0);
  EXPECT_EQ(s[2].support, 4);
}

TEST(ClassificationReportTest, MatchesScikitLearnLayout) {
  // accuracy 12/16 = 0.75
  // macro     P (0.7143 + 0.75 + 0.8) / 3 = 0.7548   R (0.8333 + 0.5 + 1) / 3 = 0.7778
  //           F1 (0.7692 + 0.6 + 0.8889) / 3 = 0.7527
  // weighted  P (6*0.7143 + 6*0.75 + 4*0.8) / 16 = 0.7491   R 12/16 = 0.75
  //           F1 (6*0.7692 + 6*0.6 + 4*0.8889) / 16 = 0.7357
  EXPECT_EQ(ClassificationReport(kConfusion, kNames),
            "              precision    recall  f1-score   support\n"
            "\n"
            "         cat       0.71      0.83      0.77         6\n"
            "         dog       0.75      0.50      0.60         6\n"
            "        bird       0.80      1.00      0.89         4\n"
            "\n"
            "    accuracy                           0.75        16\n"
            "   macro avg       0.75      0.78      0.75        16\n"
            "weighted avg       0.75      0.75      0.74        16\n");
}

TEST(ClassificationReportTest, ZeroDenominatorsAreZero) {
  // Class "b" is never predicted and has no support.
  const std::vector<int64_t> confusion = {3, 0, 1, 0, 0, 0, 1, 0, 2};
  const std::vector<ClassScores> s = ComputeClassScores(confusion, 3);
  EXPECT_EQ(s[1].precision, 0.0);
  EXPECT_EQ(s[1].recall, 0.0);
  EXPECT_EQ(s[1].f1, 0.0);
  EXPECT_EQ(s[1].support, 0);
  const std::string report = ClassificationReport(confusion, {"a", "b", "c"});
  EXPECT_NE(report.find("           b       0.00      0.00      0.00         0\n"),
            std::string::npos)
      << report;
}

TEST(ClassificationReportTest, LongClassNamesWidenTheFirstColumn) {
  const std::vector<int64_t> confusion = {1, 0, 0, 1};
  const std::string name(80, 'n');
  const std::string report = ClassificationReport(confusion, {name, "x"});
  EXPECT_NE(report.find(name + "       1.00      1.00      1.00         1\n"), std::string::npos)
      << report;
  EXPECT_NE(report.find(std::string(68, ' ') + "weighted avg"), std::string::npos) << report;
}

TEST(ClassificationReportTest, RejectsBadInput) {
  EXPECT_THROW(ClassificationReport({1, 2, 3}, {"a", "b"}), InputError);
  EXPECT_THROW(ClassificationReport({}, {}), InputError);
  EXPECT_THROW(ClassificationReport({1, -1, 0, 1}, {"a", "b"}), InputError);
}

}  // namespace
}  // namespace epochal::report
