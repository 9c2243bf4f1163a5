#include "epochal/train/diagnosis.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

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

}  // namespace

DiagnosisThresholds DiagnosisThresholds::FromConfig(const v1::AnalysisConfig& c) {
  DiagnosisThresholds t;
  if (c.has_term_threshold()) t.term = c.term_threshold();
  if (c.has_overfit_threshold()) t.overfit = c.overfit_threshold();
  if (c.has_overfit_rise()) t.overfit_rise = c.overfit_rise();
  if (c.has_over_regularized_ratio()) t.over_regularized_ratio = c.over_regularized_ratio();
  if (c.has_leakage_fraction()) t.leakage_fraction = c.leakage_fraction();
  return t;
}

std::string GapLine(const EpochRecord& r) {
  if (!r.gap_timing || !r.gap_regularization || !r.gap_data) return "";
  std::ostringstream os;
  os << "val_loss - loss = " << Fixed(r.val_loss - r.loss) << " = timing " << Fixed(*r.gap_timing)
     << " + regularization " << Fixed(*r.gap_regularization) << " + data " << Fixed(*r.gap_data)
     << " (dominant: " << r.dominant_term << ")";
  return os.str();
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
  if (r.gap_timing && r.gap_regularization && r.gap_data && r.probe_eval_loss &&
      r.probe_train_loss) {
    const double timing = *r.gap_timing, reg = *r.gap_regularization, data = *r.gap_data;
    const double total = r.val_loss - r.loss;
    std::map<std::string, double> numbers = {{"loss", r.loss},
                                             {"val_loss", r.val_loss},
                                             {"probe_train_loss", *r.probe_train_loss},
                                             {"probe_eval_loss", *r.probe_eval_loss},
                                             {"gap_timing", timing},
                                             {"gap_regularization", reg},
                                             {"gap_data", data},
                                             {"gap_total", total}};
    if (timing <= -t) {
      now.push_back({"TIMING", e, e,
                     "The reported training loss is a running mean over epoch " +
                         std::to_string(e) + " while the weights improved; the end-of-epoch " +
                         "model's training loss is " + Fixed(-timing) +
                         " lower, so about half an epoch of progress separates the curves.",
                     numbers});
    }
    if (reg <= -t) {
      now.push_back({"REGULARIZATION", e, e,
                     "Dropout and weight decay are active only in training: switching them off "
                     "lowers the training probe's loss by " +
                         Fixed(-reg) + ".",
                     numbers});
    }
    if (data <= -t &&
        !(leakage_ && leakage_->exact + leakage_->near > 0 &&
          static_cast<double>(leakage_->exact + leakage_->near) >=
              thresholds_.leakage_fraction * static_cast<double>(leakage_->val_size))) {
      now.push_back({"VALIDATION_EASIER", e, e,
                     "With the same weights and no regularization the validation set's loss is " +
                         Fixed(-data) +
                         " lower than the training probe's: its samples are "
                         "easier for this model.",
                     numbers});
    }
    const double p_eval = *r.probe_eval_loss;
    if (reg <= -t && p_eval > 0 && -reg > thresholds_.over_regularized_ratio * p_eval &&
        r.val_loss >= p_eval - t) {
      now.push_back({"OVER_REGULARIZED", e, e,
                     "Regularization adds " + Fixed(-reg) + " to a training loss of only " +
                         Fixed(p_eval) +
                         " without it, and validation is no better than the "
                         "clean training loss: the model is held back and may underfit.",
                     numbers});
    }
    double best = r.val_loss;
    for (const auto& prev : history.epochs) best = std::min(best, prev.val_loss);
    if (data >= thresholds_.overfit && r.val_loss >= best + thresholds_.overfit_rise) {
      numbers["best_val_loss"] = best;
      now.push_back({"OVERFITTING", e, e,
                     "Validation loss is " + Fixed(data) + " above the training probe's and " +
                         Fixed(r.val_loss - best) + " above its best (" + Fixed(best) +
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
       << ", \"gap\": " << JsonString(GapLine(r))
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
