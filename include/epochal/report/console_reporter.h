// Prints training progress the way Keras does: a progress bar per epoch (redrawn in
// place on a terminal, one line per 10% elsewhere) and a one-line summary per epoch.
#pragma once

#include <memory>
#include <ostream>

#include "epochal/report/progress_bar.h"
#include "epochal/train/diagnosis.h"
#include "epochal/train/observer.h"

namespace epochal::report {

// "  2 ranks: step 61.2 ms, data 0.05 ms, exposed all-reduce wait 1.20 ms (2.0% of the
// step), all-reduce 14.0 ms (91% hidden behind backward)": means over the ranks.
std::string RankTimingLine(const train::EpochRecord& record);

class ConsoleReporter final : public train::TrainingObserver {
 public:
  ConsoleReporter(std::ostream& out, bool interactive) : out_(out), interactive_(interactive) {}
  void OnEpochStart(int epoch, int total_epochs, int64_t samples) override;
  void OnStep(const train::StepEvent& event) override;
  void OnEpochEnd(const train::EpochRecord& record, const train::EvalResult& validation,
                  const train::History& history) override;
  // After a stop mid-epoch, ends the redrawn bar's line.
  void OnTrainingEnd(const train::History& history, const train::EvalResult& validation) override;

 private:
  std::ostream& out_;
  bool interactive_;
  int total_epochs_ = 0;
  std::unique_ptr<ProgressBar> bar_;
  train::StepEvent last_;
};

// Writes a run's files into `dir` as training goes: history.json, history.csv,
// batches.csv, loss_shift.svg, gap.svg and diagnosis.json after every epoch (so a crash
// loses at most the current epoch), and report.txt (the classification report on the
// validation set) at the end, unless the run stopped (no validation then).
class RunFilesWriter final : public train::TrainingObserver {
 public:
  // `diagnosis` (not owned; may be null) must outlive the writer.
  RunFilesWriter(std::string dir, std::vector<std::string> class_names,
                 const train::Diagnosis* diagnosis = nullptr)
      : dir_(std::move(dir)), class_names_(std::move(class_names)), diagnosis_(diagnosis) {}
  void OnEpochEnd(const train::EpochRecord& record, const train::EvalResult& validation,
                  const train::History& history) override;
  void OnTrainingEnd(const train::History& history, const train::EvalResult& validation) override;

 private:
  std::string dir_;
  std::vector<std::string> class_names_;
  const train::Diagnosis* diagnosis_;
};

}  // namespace epochal::report
