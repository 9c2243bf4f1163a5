#include "epochal/report/console_reporter.h"

#include <filesystem>

#include "epochal/report/atomic_file.h"
#include "epochal/report/classification_report.h"
#include "epochal/report/epoch_summary.h"
#include "epochal/report/history_writer.h"

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
  out_.flush();
}

void RunFilesWriter::OnEpochEnd(const train::EpochRecord&, const train::EvalResult&,
                                const train::History& history) {
  WriteHistoryFiles(history, dir_);
}

void RunFilesWriter::OnTrainingEnd(const train::History& history,
                                   const train::EvalResult& validation) {
  WriteHistoryFiles(history, dir_);
  WriteTextFileAtomic(std::filesystem::path(dir_) / "report.txt",
                      ClassificationReport(validation.confusion, class_names_));
}

}  // namespace epochal::report
