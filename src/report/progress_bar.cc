#include "epochal/report/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ostream>
#include <utility>

#include "epochal/core/error.h"
#include "epochal/report/format.h"

namespace epochal::report {

bool IsTerminal(FILE* stream) { return stream != nullptr && ::isatty(::fileno(stream)) == 1; }

double ProgressBar::SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

ProgressBar::ProgressBar(int64_t total, std::ostream& out, bool interactive, Clock clock)
    : total_(total), out_(out), interactive_(interactive), clock_(std::move(clock)) {
  if (total_ <= 0) {
    throw InputError(detail::StrCat("ProgressBar: total must be > 0, got ", total_));
  }
  if (!clock_) clock_ = SteadySeconds;
  start_ = clock_();
}

double ProgressBar::Eta(int64_t done, double now) const {
  if (done <= 0) return -1.0;  // unknown
  return (now - start_) / static_cast<double>(done) * static_cast<double>(total_ - done);
}

std::string ProgressBar::BarLine(int64_t done, double loss, double accuracy, double now) const {
  const std::string total = std::to_string(total_);
  std::string count = std::to_string(done);
  std::string line(total.size() > count.size() ? total.size() - count.size() : 0, ' ');
  line += count + "/" + total + " [";
  const auto filled = static_cast<int>(kBarWidth * done / total_);
  if (done < total_) {
    line.append(static_cast<size_t>(filled), '=');
    line.push_back('>');
    line.append(static_cast<size_t>(kBarWidth - filled - 1), '.');
  } else {
    line.append(static_cast<size_t>(kBarWidth), '=');
  }
  line += "]";
  if (done < total_) {
    line += " - ETA: " + FormatDuration(Eta(done, now));
  } else {
    line += " - " + FormatDuration(now - start_);
  }
  line += " - loss: " + FormatMetric(loss) + " - accuracy: " + FormatMetric(accuracy);
  return line;
}

void ProgressBar::DrawInteractive(int64_t done, double loss, double accuracy, double now) {
  std::string line = BarLine(done, loss, accuracy, now);
  const size_t width = line.size();
  // Blank out the tail of a longer previous line.
  if (last_width_ > width) line.append(last_width_ - width, ' ');
  last_width_ = width;
  out_ << '\r' << line << std::flush;
  last_draw_ = now;
  drawn_ = true;
}

void ProgressBar::PrintDecileLine(int decile, int64_t done, double loss, double accuracy,
                                  double now) {
  out_ << "epoch progress " << decile * 10 << "% (" << done << "/" << total_ << ") - ";
  if (done < total_) {
    out_ << "ETA " << FormatDuration(Eta(done, now));
  } else {
    out_ << FormatDuration(now - start_);
  }
  out_ << " - loss: " << FormatMetric(loss) << " - accuracy: " << FormatMetric(accuracy) << '\n'
       << std::flush;
  last_decile_ = decile;
}

void ProgressBar::Update(int64_t done, double loss, double accuracy) {
  if (finished_) return;
  done = std::clamp<int64_t>(done, 0, total_);
  const double now = clock_();
  if (interactive_) {
    if (!drawn_ || done == total_ || now - last_draw_ >= kRedrawInterval) {
      DrawInteractive(done, loss, accuracy, now);
    }
    return;
  }
  const auto decile = static_cast<int>(done * 10 / total_);
  if (decile > last_decile_) PrintDecileLine(decile, done, loss, accuracy, now);
}

void ProgressBar::Finish(double loss, double accuracy) {
  if (finished_) return;
  const double now = clock_();
  if (interactive_) {
    DrawInteractive(total_, loss, accuracy, now);
    out_ << '\n' << std::flush;
  } else if (last_decile_ < 10) {
    PrintDecileLine(10, total_, loss, accuracy, now);
  }
  finished_ = true;
}

}  // namespace epochal::report
