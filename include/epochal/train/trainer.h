// The single-process training loop: seeded shuffle, forward, backward, SGD step, and
// validation after every epoch. Observers (console, history files, later metrics and
// control) are told about every step and epoch.
//
// Every random choice is a pure function of (seed, epoch, sample id), so a run is
// reproducible for a given thread count (oneDNN's reductions may order sums
// differently with other thread counts).
// Thread safety: a Trainer is driven by one thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "epochal/data/idx.h"
#include "epochal/nn/model.h"
#include "epochal/optim/sgd.h"
#include "epochal/train/history.h"
#include "epochal/train/observer.h"
#include "epochal/v1/config.pb.h"

namespace epochal::train {

class Trainer {
 public:
  // `config` must be validated (LoadExperimentConfig). The datasets must match the
  // model's input shape and class count.
  Trainer(const v1::ExperimentConfig& config, const data::Dataset& train_set,
          const data::Dataset& val_set);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Observers are not owned and must outlive Run().
  void AddObserver(TrainingObserver* observer) { observers_.push_back(observer); }

  // Trains config.training.epochs epochs; returns the history. Throws Error (naming the
  // step) if the loss stops being finite.
  const History& Run();

  // Mean loss, accuracy and confusion matrix of the model on `dataset` in `mode`.
  EvalResult Evaluate(const data::Dataset& dataset, nn::Mode mode = nn::Mode::kInference);

  nn::Model& model() { return *model_; }
  optim::Sgd& optimizer() { return *sgd_; }
  const History& history() const { return history_; }

 private:
  // One epoch of training; fills the training fields of `record`.
  void TrainEpoch(int epoch, EpochRecord* record);

  v1::ExperimentConfig config_;
  const data::Dataset& train_set_;
  const data::Dataset& val_set_;
  std::unique_ptr<nn::Model> model_;
  std::unique_ptr<optim::Sgd> sgd_;
  History history_;
  std::vector<TrainingObserver*> observers_;
  int64_t global_step_ = 0;
  // Per-step buffers, sized once for the largest batch.
  std::vector<float> images_;
  std::vector<int32_t> labels_;
};

// Checks that `dataset` fits the model spec (sample shape and label range); throws
// InputError naming the dataset otherwise.
void CheckDatasetMatchesModel(const data::Dataset& dataset, const v1::ModelSpec& spec);

}  // namespace epochal::train
