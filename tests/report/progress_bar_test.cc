#include "epochal/report/progress_bar.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/report/format.h"

namespace epochal::report {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(FormatTest, DurationsAsKeras) {
  EXPECT_EQ(FormatDuration(0.0), "0s");
  EXPECT_EQ(FormatDuration(59.9), "59s");
  EXPECT_EQ(FormatDuration(102.4), "1:42");
  EXPECT_EQ(FormatDuration(3723.0), "1:02:03");
  EXPECT_EQ(FormatDuration(-1.0), "-");
}

TEST(FormatTest, MetricsAsKeras) {
  EXPECT_EQ(FormatMetric(0.54331), "0.5433");
  EXPECT_EQ(FormatMetric(1.5), "1.5000");
  EXPECT_EQ(FormatMetric(0.0005), "5.0000e-04");
}

TEST(ProgressBarTest, NonInteractivePrintsOneLinePerTenPercent) {
  double now = 0.0;
  std::ostringstream out;
  ProgressBar bar(100, out, /*interactive=*/false, [&now] { return now; });
  for (int done = 0; done <= 100; ++done) {
    now = 0.5 * done;
    bar.Update(done, 0.5, 0.8);
  }
  bar.Finish(0.5, 0.8);  // 100% is already out: nothing more
  const std::vector<std::string> lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 10u) << out.str();
  // At 10 items after 5 s: 0.5 s an item, 90 left.
  EXPECT_EQ(lines[0], "epoch progress 10% (10/100) - ETA 45s - loss: 0.5000 - accuracy: 0.8000");
  EXPECT_EQ(lines[4], "epoch progress 50% (50/100) - ETA 25s - loss: 0.5000 - accuracy: 0.8000");
  EXPECT_EQ(lines[9], "epoch progress 100% (100/100) - 50s - loss: 0.5000 - accuracy: 0.8000");
  EXPECT_EQ(out.str().find('\r'), std::string::npos);
}

TEST(ProgressBarTest, NonInteractiveJumpPrintsOnceAndFinishCompletes) {
  double now = 0.0;
  std::ostringstream out;
  ProgressBar bar(60000, out, false, [&now] { return now; });
  now = 92.0;
  bar.Update(6000, 0.5433, 0.8181);  // 10%: 92 s for 6000 -> 828 s left
  bar.Update(6001, 0.5433, 0.8181);  // no boundary
  now = 100.0;
  bar.Update(25000, 0.5, 0.8);  // crosses 20% and 40%: one line
  now = 194.0;
  bar.Finish(0.4, 0.85);
  const std::vector<std::string> lines = Lines(out.str());
  ASSERT_EQ(lines.size(), 3u) << out.str();
  EXPECT_EQ(lines[0],
            "epoch progress 10% (6000/60000) - ETA 13:48 - loss: 0.5433 - accuracy: 0.8181");
  EXPECT_EQ(lines[1].rfind("epoch progress 40% (25000/60000) - ETA ", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2], "epoch progress 100% (60000/60000) - 3:14 - loss: 0.4000 - accuracy: 0.8500");
}

TEST(ProgressBarTest, InteractiveRedrawsInPlaceWithEta) {
  double now = 0.0;
  std::ostringstream out;
  ProgressBar bar(60000, out, /*interactive=*/true, [&now] { return now; });
  // 3.27 s for 1856 images: 3.27 / 1856 * 58144 = 102.4 s left.
  now = 3.27;
  bar.Update(1856, 0.5433, 0.8181);
  EXPECT_EQ(out.str(),
            "\r 1856/60000 [>.............................] - ETA: 1:42 - loss: 0.5433 - "
            "accuracy: 0.8181");
  now = 97.0;
  bar.Update(30000, 0.4, 0.85);
  EXPECT_NE(out.str().find("\r30000/60000 [===============>..............] - ETA: 1:37"),
            std::string::npos)
      << out.str();
  now = 194.0;
  bar.Finish(0.3, 0.9);
  const std::string text = out.str();
  // Padded with blanks over the longer ETA line it replaces, then the line ends.
  const size_t final_line = text.find(
      "\r60000/60000 [==============================] - 3:14 - loss: 0.3000 - accuracy: 0.9000");
  ASSERT_NE(final_line, std::string::npos) << text;
  EXPECT_EQ(text.find_first_not_of(' ', text.find("0.9000", final_line) + 6), text.size() - 1);
  EXPECT_EQ(text.back(), '\n');
}

TEST(ProgressBarTest, InteractiveRedrawsAtMostTenTimesASecond) {
  double now = 0.0;
  std::ostringstream out;
  ProgressBar bar(1000, out, true, [&now] { return now; });
  for (int done = 1; done <= 1000; ++done) {
    now = 0.001 * done;  // 1 s in total
    bar.Update(done, 1.0, 0.5);
  }
  const std::string text = out.str();
  const auto redraws = std::count(text.begin(), text.end(), '\r');
  // The first draw, one per 0.1 s, and the final one (done == total).
  EXPECT_GE(redraws, 10);
  EXPECT_LE(redraws, 12);
  EXPECT_NE(text.find("1000/1000 [=============================="), std::string::npos);
}

TEST(ProgressBarTest, InteractivePadsOverLongerPreviousLine) {
  double now = 0.0;
  std::ostringstream out;
  ProgressBar bar(10, out, true, [&now] { return now; });
  bar.Update(1, 12345.0, 0.5);  // long loss text
  now = 1.0;
  bar.Update(2, 1.0, 0.5);
  const std::string text = out.str();
  const size_t second = text.rfind('\r');
  const size_t first_width = second - 1;
  EXPECT_EQ(text.size() - second - 1, first_width);
  EXPECT_EQ(text.back(), ' ');
}

TEST(ProgressBarTest, RejectsEmptyEpoch) {
  std::ostringstream out;
  EXPECT_THROW(ProgressBar(0, out, false), InputError);
}

TEST(ProgressBarTest, StringStreamIsNotATerminal) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  EXPECT_FALSE(IsTerminal(f));
  std::fclose(f);
  EXPECT_FALSE(IsTerminal(nullptr));
}

}  // namespace
}  // namespace epochal::report
