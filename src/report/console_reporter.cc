#include "epochal/report/console_reporter.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "epochal/core/atomic_file.h"
#include "epochal/report/classification_report.h"
#include "epochal/report/epoch_summary.h"
#include "epochal/report/history_writer.h"
#include "epochal/report/plots.h"
#include "epochal/train/diagnosis.h"

namespace epochal::report {

void ConsoleReporter::OnEpochStart(int epoch, int total_epochs, int64_t samples) {
  total_epochs_ = total_epochs;
  out_ << "Epoch " << epoch << "/" << total_epochs << "\n";
  out_.flush();
  bar_ = std::make_unique<ProgressBar>(samples, out_, interactive_);
}

void ConsoleReporter::OnStep(const train::StepEvent& event) {
  last_ = event;
  if (bar_) bar_->Update(event.samples_in_epoch, event.running_loss, event.running_accuracy);
}

void ConsoleReporter::OnEpochEnd(const train::EpochRecord& record, const train::EvalResult&,
                                 const train::History&) {
  if (bar_) bar_->Finish(last_.running_loss, last_.running_accuracy);
  bar_.reset();
  out_ << EpochSummaryLine(record, total_epochs_) << "\n";
  if (const std::string gap = train::GapLine(record); !gap.empty()) out_ << "  " << gap << "\n";
  for (const std::string& finding : record.findings) out_ << "  " << finding << "\n";
  if (record.rank_timings.size() > 1) out_ << RankTimingLine(record) << "\n";
  out_.flush();
}

void ConsoleReporter::OnTrainingEnd(const train::History&, const train::EvalResult&) {
  if (bar_ && interactive_) out_ << "\n";
  bar_.reset();
  out_.flush();
}

std::string RankTimingLine(const train::EpochRecord& record) {
  double step = 0, wait = 0, allreduce = 0, data = 0, straggler = 0;
  for (const auto& t : record.rank_timings) {
    step += t.step_ms;
    wait += t.allreduce_wait_ms;
    straggler += t.straggler_wait_ms;
    allreduce += t.allreduce_ms;
    data += t.data_ms;
  }
  const double n = static_cast<double>(record.rank_timings.size());
  char line[320];
  std::snprintf(line, sizeof line,
                "  %zu ranks: step %.1f ms, data %.2f ms, exposed all-reduce wait %.2f ms "
                "(%.1f%% of the step; %.2f ms of it waiting for the slowest rank), "
                "all-reduce %.1f ms (%.0f%% hidden behind backward)",
                record.rank_timings.size(), step / n, data / n, wait / n,
                step > 0 ? 100.0 * wait / step : 0.0, straggler / n, allreduce / n,
                allreduce > 0 ? 100.0 * std::max(0.0, 1.0 - wait / allreduce) : 0.0);
  return line;
}

void RunFilesWriter::OnEpochEnd(const train::EpochRecord&, const train::EvalResult&,
                                const train::History& history) {
  WriteHistoryFiles(history, dir_);
  WritePlots(history, dir_);
  if (diagnosis_ != nullptr) {
    WriteFileAtomic(std::filesystem::path(dir_) / "diagnosis.json", diagnosis_->Json(history));
  }
}

void RunFilesWriter::OnTrainingEnd(const train::History& history,
                                   const train::EvalResult& validation) {
  WriteHistoryFiles(history, dir_);
  WritePlots(history, dir_);
  if (diagnosis_ != nullptr) {
    WriteFileAtomic(std::filesystem::path(dir_) / "diagnosis.json", diagnosis_->Json(history));
  }
  // A stopped run has no validation of its last weights (the resumed run writes it).
  if (!validation.confusion.empty()) {
    WriteFileAtomic(std::filesystem::path(dir_) / "report.txt",
                    ClassificationReport(validation.confusion, class_names_));
  }
}

}  // namespace epochal::report
