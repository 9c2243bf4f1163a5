#include "epochal/train/diagnosis.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "epochal/nn/batch_norm.h"

namespace epochal::train {
namespace {

std::string Fixed(double v, int digits = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string Percent(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * v);
  return buf;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
      continue;
    }
    out.push_back(c);
  }
  return out + "\"";
}

std::string JsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

// Whether `r` carries the four-term decomposition.
bool Decomposed(const EpochRecord& r) {
  return r.gap_timing && r.gap_dropout && r.gap_batchnorm && r.gap_regularization && r.gap_data &&
         r.probe_train_loss && r.probe_nodrop_loss && r.probe_eval_loss;
}

// A term passes when it reaches the threshold and kStandardErrors of its standard error.
bool Above(double value, const std::optional<double>& se, double threshold) {
  return value >= threshold && value >= kStandardErrors * se.value_or(0.0);
}
bool Below(double value, const std::optional<double>& se, double threshold) {
  return Above(-value, se, threshold);
}

std::string PlusMinus(double v, const std::optional<double>& se) {
  return se ? Fixed(v) + " \u00b1 " + Fixed(*se) : Fixed(v);
}

// Global steps taken by the end of epoch `e` (every step leaves a BatchRecord).
int64_t StepsBy(const History& history, int e) {
  return std::count_if(history.batches.begin(), history.batches.end(),
                       [e](const BatchRecord& b) { return b.epoch_progress <= e + 1e-9; });
}

}  // namespace

DiagnosisThresholds DiagnosisThresholds::FromConfig(const v1::AnalysisConfig& c) {
  DiagnosisThresholds t;
  if (c.has_term_threshold()) t.term = c.term_threshold();
  if (c.has_overfit_threshold()) t.overfit = c.overfit_threshold();
  if (c.has_overfit_rise()) t.overfit_rise = c.overfit_rise();
  if (c.has_over_regularized_ratio()) t.over_regularized_ratio = c.over_regularized_ratio();
  if (c.has_over_regularized_gap_ratio()) {
    t.over_regularized_gap_ratio = c.over_regularized_gap_ratio();
  }
  if (c.has_leakage_fraction()) t.leakage_fraction = c.leakage_fraction();
  return t;
}

std::vector<std::string> RegularizationTraits::AbsentTerms() const {
  std::vector<std::string> out;
  if (!has_dropout_term()) out.emplace_back("dropout");
  if (!has_batchnorm_term()) out.emplace_back("batchnorm");
  return out;
}

RegularizationTraits RegularizationTraits::FromConfig(const v1::ExperimentConfig& config) {
  RegularizationTraits t;
  t.weight_decay = config.optimizer().weight_decay();
  for (const v1::LayerSpec& layer : config.model().layers()) {
    if (layer.has_dropout() && layer.dropout().rate() > 0) {
      t.dropout_rates.push_back(layer.dropout().rate());
    }
    if (layer.has_batch_norm()) {
      ++t.batch_norm_layers;
      // The layer's default (batch_norm.h) where the config leaves it unset.
      const float m = layer.batch_norm().has_momentum() ? layer.batch_norm().momentum()
                                                        : nn::BatchNormOptions{}.momentum;
      t.batch_norm_momentum = std::max(t.batch_norm_momentum, m);
    }
  }
  return t;
}

std::string GapLine(const EpochRecord& r, const std::vector<std::string>& absent_terms) {
  if (!r.gap_timing || !r.gap_dropout || !r.gap_batchnorm || !r.gap_data) return "";
  const auto term = [&](const char* name, const std::optional<double>& value,
                        const std::optional<double>& se) {
    if (std::find(absent_terms.begin(), absent_terms.end(), name) != absent_terms.end()) {
      return std::string(name) + " (not present)";
    }
    return std::string(name) + " " + Fixed(*value) + (se ? " \u00b1 " + Fixed(*se) : "");
  };
  std::ostringstream os;
  os << "val_loss - loss = " << Fixed(r.val_loss - r.loss) << " = "
     << term("timing", r.gap_timing, r.gap_timing_se) << " + "
     << term("dropout", r.gap_dropout, r.gap_dropout_se) << " + "
     << term("batchnorm", r.gap_batchnorm, r.gap_batchnorm_se) << " + "
     << term("data", r.gap_data, r.gap_data_se) << " (dominant: " << r.dominant_term << ")";
  return os.str();
}

bool Diagnosis::LeakageFlagged() const {
  return leakage_ && leakage_->Raises(thresholds_.leakage_fraction);
}

std::string Diagnosis::RegularizationSentence(const EpochRecord& r) const {
  std::vector<std::string> parts;
  if (traits_.has_dropout_term() && *r.gap_dropout < 0) {
    std::string what;
    if (!traits_.dropout_rates.empty()) {
      what = "dropout (rate";
      what += traits_.dropout_rates.size() > 1 ? "s " : " ";
      for (size_t i = 0; i < traits_.dropout_rates.size(); ++i) {
        what += (i ? ", " : "") + Fixed(traits_.dropout_rates[i], 2);
      }
      what += ")";
    }
    if (traits_.weight_decay > 0) {
      char wd[32];
      std::snprintf(wd, sizeof wd, "%g", traits_.weight_decay);
      what +=
          (what.empty() ? "" : " and ") + std::string("the L2 penalty (weight decay ") + wd + ")";
    }
    parts.push_back(PlusMinus(-*r.gap_dropout, r.gap_dropout_se) + " from " + what);
  }
  if (traits_.has_batchnorm_term() && *r.gap_batchnorm < 0) {
    parts.push_back(PlusMinus(-*r.gap_batchnorm, r.gap_batchnorm_se) +
                    " from batch norm normalizing with batch instead of running statistics");
  }
  std::string joined;
  for (size_t i = 0; i < parts.size(); ++i) joined += (i ? ", and " : "") + parts[i];
  return "Training-only behaviour raises the training probe's loss by " +
         PlusMinus(-*r.gap_regularization, r.gap_regularization_se) +
         (joined.empty() ? std::string(".") : ": " + joined + ".") +
         " Inference switches it off, so validation does not pay it.";
}

bool Diagnosis::OverRegularizedAt(const History& history, size_t i, bool require_slowing) const {
  const EpochRecord& r = history.epochs[i];
  if (!traits_.has_dropout_term() || !Decomposed(r) || r.epoch_fraction < 1) return false;
  const double cost = -*r.gap_dropout;  // What dropout and L2 add to the training loss.
  const double clean = *r.probe_nodrop_loss;
  const double gap = std::max(*r.gap_data, 0.0);  // What it protects against.
  if (!Above(cost, r.gap_dropout_se, thresholds_.term)) return false;
  if (cost < thresholds_.over_regularized_ratio * clean) return false;
  if (cost <= thresholds_.over_regularized_gap_ratio * gap) return false;
  if (!require_slowing) return true;
  // Learning has slowed: the last epoch bought less validation loss than the cost.
  return i >= 1 && history.epochs[i - 1].val_loss - r.val_loss < cost;
}

std::vector<std::vector<Finding>> Diagnosis::Replay(const History& history) {
  std::vector<std::vector<Finding>> out;
  History prefix = history;
  prefix.epochs.clear();
  for (const EpochRecord& e : history.epochs) {
    prefix.epochs.push_back(e);
    out.push_back(Update(prefix));
  }
  return out;
}

std::vector<Finding> Diagnosis::Update(const History& history) {
  std::vector<Finding> now;
  if (history.epochs.empty()) return now;
  const EpochRecord& r = history.epochs.back();
  if (r.epoch_fraction < 1) return now;  // A partial epoch is not diagnosed.
  const int e = r.epoch;
  const double t = thresholds_.term;

  if (leakage_ && leakage_->Raises(thresholds_.leakage_fraction)) {
    const LeakageSummary& l = *leakage_;
    const double share = static_cast<double>(l.flagged()) / static_cast<double>(l.val_size);
    std::string kinds;
    for (const auto& [count, name] :
         {std::pair{l.exact, "exact"}, std::pair{l.near, "near"},
          std::pair{l.photometric, "brightness/contrast-changed"}, std::pair{l.shifted, "shifted"},
          std::pair{l.mirrored, "mirrored"}}) {
      if (count == 0) continue;
      kinds += (kinds.empty() ? "" : ", ") + std::to_string(count) + " " + name;
    }
    now.push_back({"LEAKAGE",
                   e,
                   e,
                   std::to_string(l.flagged()) + " of " + std::to_string(l.val_size) +
                       " validation samples (" + Percent(share) +
                       ") are copies of training samples (" + kinds +
                       "), so validation partly measures memorization.",
                   {{"exact", static_cast<double>(l.exact)},
                    {"near", static_cast<double>(l.near)},
                    {"photometric", static_cast<double>(l.photometric)},
                    {"shifted", static_cast<double>(l.shifted)},
                    {"mirrored", static_cast<double>(l.mirrored)},
                    {"flagged", static_cast<double>(l.flagged())},
                    {"label_conflicts", static_cast<double>(l.label_conflicts)},
                    {"fraction", share}}});
  }
  if (Decomposed(r)) {
    const double timing = *r.gap_timing, dropout = *r.gap_dropout, bn = *r.gap_batchnorm;
    const double reg = *r.gap_regularization, data = *r.gap_data;
    const double total = r.val_loss - r.loss;
    std::map<std::string, double> numbers = {{"loss", r.loss},
                                             {"val_loss", r.val_loss},
                                             {"probe_train_loss", *r.probe_train_loss},
                                             {"probe_nodrop_loss", *r.probe_nodrop_loss},
                                             {"probe_eval_loss", *r.probe_eval_loss},
                                             {"gap_timing", timing},
                                             {"gap_dropout", dropout},
                                             {"gap_batchnorm", bn},
                                             {"gap_regularization", reg},
                                             {"gap_data", data},
                                             {"gap_total", total}};
    for (const auto& [key, se] : {std::pair{"gap_timing_se", r.gap_timing_se},
                                  {"gap_dropout_se", r.gap_dropout_se},
                                  {"gap_batchnorm_se", r.gap_batchnorm_se},
                                  {"gap_regularization_se", r.gap_regularization_se},
                                  {"gap_data_se", r.gap_data_se}}) {
      if (se) numbers[key] = *se;
    }
    if (Below(timing, r.gap_timing_se, t)) {
      now.push_back({"TIMING", e, e,
                     "The reported training loss is a running mean over epoch " +
                         std::to_string(e) + " while the weights improved; the end-of-epoch " +
                         "model's training loss is " + PlusMinus(-timing, r.gap_timing_se) +
                         " lower, so about half an epoch of progress separates the curves.",
                     numbers});
    }
    if (Below(reg, r.gap_regularization_se, t)) {
      now.push_back({"REGULARIZATION", e, e, RegularizationSentence(r), numbers});
    }
    if (Above(bn, r.gap_batchnorm_se, t)) {
      const int64_t steps = StepsBy(history, e);
      const double m = traits_.batch_norm_momentum;
      const double needed = m > 0 && m < 1 ? std::ceil(std::log(0.01) / std::log(m)) : 0.0;
      numbers["steps"] = static_cast<double>(steps);
      numbers["bn_momentum"] = m;
      numbers["steps_to_forget"] = needed;
      std::string why;
      if (recompute_bn_batches_ > 0) {
        why = "even with the running statistics recomputed over " +
              std::to_string(recompute_bn_batches_) +
              " training batches, so the batch statistics of single training batches differ "
              "from the population's (small or unrepresentative batches).";
      } else if (static_cast<double>(steps) < needed) {
        why = "its running statistics (momentum " + Fixed(m, 3) + ") need about " +
              Fixed(needed, 0) + " steps to forget their initial values, and this run has had " +
              std::to_string(steps) +
              ", so they still hold much of their start. --recompute-bn-stats N recomputes them "
              "over N training batches before each validation.";
      } else {
        why = "its running statistics (momentum " + Fixed(m, 3) + ", about " + Fixed(needed, 0) +
              " steps of memory) trail the batch statistics of weights that keep changing. "
              "--recompute-bn-stats N recomputes them over N training batches before each "
              "validation.";
      }
      now.push_back({"BATCHNORM_LAG", e, e,
                     "Batch norm in inference mode raises the training probe's loss by " +
                         PlusMinus(bn, r.gap_batchnorm_se) + " over batch statistics: " + why,
                     numbers});
    }
    if (Below(data, r.gap_data_se, t) && !LeakageFlagged()) {
      now.push_back({"VALIDATION_EASIER", e, e,
                     "With the same weights and no regularization the validation set's loss is " +
                         PlusMinus(-data, r.gap_data_se) +
                         " lower than the training probe's: its samples are easier for this "
                         "model.",
                     numbers});
    }
    const size_t last = history.epochs.size() - 1;
    if (last >= 1 && OverRegularizedAt(history, last, true) &&
        OverRegularizedAt(history, last - 1, false)) {
      const double cost = -dropout;
      const EpochRecord& prev = history.epochs[history.epochs.size() - 2];
      numbers["regularization_cost"] = cost;
      numbers["val_loss_gain"] = prev.val_loss - r.val_loss;
      now.push_back(
          {"OVER_REGULARIZED", e, e,
           "Dropout and L2 raise the training loss by " + PlusMinus(cost, r.gap_dropout_se) + " (" +
               Percent(cost / *r.probe_nodrop_loss) + " of the clean " +
               Fixed(*r.probe_nodrop_loss) + ") to guard a generalization gap of only " +
               Fixed(std::max(data, 0.0)) + ", for two epochs running, while validation loss " +
               "improved by " + Fixed(prev.val_loss - r.val_loss) +
               " in the last: the model is held back more than it is protected; try less "
               "dropout or weight decay.",
           numbers});
    }
    double best = r.val_loss;
    for (const auto& prev : history.epochs) best = std::min(best, prev.val_loss);
    if (Above(data, r.gap_data_se, thresholds_.overfit) &&
        r.val_loss >= best + thresholds_.overfit_rise) {
      numbers["best_val_loss"] = best;
      now.push_back({"OVERFITTING", e, e,
                     "Validation loss is " + PlusMinus(data, r.gap_data_se) +
                         " above the training probe's and " + Fixed(r.val_loss - best) +
                         " above its best (" + Fixed(best) +
                         "): the model fits training samples it will not see again.",
                     numbers});
    }
  }
  // Extend ranges that continue from the previous epoch; open new ones otherwise.
  for (const Finding& f : now) {
    auto it = std::find_if(findings_.rbegin(), findings_.rend(),
                           [&](const Finding& g) { return g.name == f.name; });
    if (it != findings_.rend() && it->last_epoch == e - 1) {
      it->last_epoch = e;
      it->explanation = f.explanation;
      it->numbers = f.numbers;
    } else {
      findings_.push_back(f);
    }
  }
  return now;
}

std::string Diagnosis::Json(const History& history) const {
  std::ostringstream os;
  os << "{\n  \"thresholds\": {\"term\": " << JsonNumber(thresholds_.term)
     << ", \"overfit\": " << JsonNumber(thresholds_.overfit)
     << ", \"overfit_rise\": " << JsonNumber(thresholds_.overfit_rise)
     << ", \"over_regularized_ratio\": " << JsonNumber(thresholds_.over_regularized_ratio)
     << ", \"over_regularized_gap_ratio\": " << JsonNumber(thresholds_.over_regularized_gap_ratio)
     << ", \"standard_errors\": " << JsonNumber(kStandardErrors)
     << ", \"leakage_fraction\": " << JsonNumber(thresholds_.leakage_fraction) << "},\n";
  os << "  \"leakage\": ";
  if (leakage_) {
    os << "{\"exact\": " << leakage_->exact << ", \"near\": " << leakage_->near
       << ", \"photometric\": " << leakage_->photometric << ", \"shifted\": " << leakage_->shifted
       << ", \"mirrored\": " << leakage_->mirrored << ", \"flagged\": " << leakage_->flagged()
       << ", \"label_conflicts\": " << leakage_->label_conflicts
       << ", \"val_size\": " << leakage_->val_size << "},\n";
  } else {
    os << "null,\n";
  }
  os << "  \"findings\": [";
  for (size_t i = 0; i < findings_.size(); ++i) {
    const Finding& f = findings_[i];
    os << (i ? "," : "") << "\n    {\"name\": " << JsonString(f.name)
       << ", \"first_epoch\": " << f.first_epoch << ", \"last_epoch\": " << f.last_epoch
       << ", \"explanation\": " << JsonString(f.explanation) << ", \"numbers\": {";
    size_t k = 0;
    for (const auto& [key, value] : f.numbers) {
      os << (k++ ? ", " : "") << JsonString(key) << ": " << JsonNumber(value);
    }
    os << "}}";
  }
  os << (findings_.empty() ? "" : "\n  ") << "],\n  \"epochs\": [";
  for (size_t i = 0; i < history.epochs.size(); ++i) {
    const EpochRecord& r = history.epochs[i];
    os << (i ? "," : "") << "\n    {\"epoch\": " << r.epoch
       << ", \"gap\": " << JsonString(GapLine(r, history.absent_terms))
       << ", \"dominant_term\": " << JsonString(r.dominant_term) << ", \"findings\": [";
    for (size_t j = 0; j < r.findings.size(); ++j) {
      os << (j ? ", " : "") << JsonString(r.findings[j]);
    }
    os << "]}";
  }
  os << (history.epochs.empty() ? "" : "\n  ") << "]\n}\n";
  return os.str();
}

}  // namespace epochal::train
