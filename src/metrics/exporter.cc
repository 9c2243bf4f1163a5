#include "epochal/metrics/exporter.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <tuple>

#include "epochal/core/error.h"
#include "epochal/core/file_read.h"
#include "epochal/core/logging.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace epochal::metrics {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// The findings the diagnosis can raise (docs/loss-gap.md); each is exported from the
// start, at 0, so a dashboard shows the full list. Others appear when first raised.
constexpr const char* kFindingNames[] = {
    "TIMING",  "REGULARIZATION",   "BATCHNORM_LAG", "VALIDATION_EASIER",
    "LEAKAGE", "OVER_REGULARIZED", "OVERFITTING"};
constexpr const char* kStates[] = {"starting", "training", "paused", "stopped", "finished"};
constexpr const char* kLossSummaryName = "epochal_train_loss";

// A registry that remembers the name of every family registered (prometheus-cpp's
// Collect() leaves out families without series, e.g. per-rank ones before a gather).
struct NamedRegistry {
  prometheus::Registry& registry;
  std::vector<std::string>& names;
};

Family<Gauge>& GaugeFamily(NamedRegistry r, const std::string& name, const std::string& help) {
  r.names.push_back(name);
  return prometheus::BuildGauge().Name(name).Help(help).Register(r.registry);
}
Family<Counter>& CounterFamily(NamedRegistry r, const std::string& name, const std::string& help) {
  r.names.push_back(name);
  return prometheus::BuildCounter().Name(name).Help(help).Register(r.registry);
}
Family<Histogram>& HistogramFamily(NamedRegistry r, const std::string& name,
                                   const std::string& help) {
  r.names.push_back(name);
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r.registry);
}

// "TIMING: timing term ..." -> "TIMING".
std::string FindingName(const std::string& text) { return text.substr(0, text.find(':')); }

}  // namespace

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
    const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

BasicAuth ReadBasicAuthFile(const std::string& path) {
  std::istringstream in(ReadFileCapped(path, kMaxTokenFileBytes, "--metrics-auth-file"));
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    EPOCHAL_LOG(kWarning, path, " holds the metrics password but others may read it (chmod 600)");
  }
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == line.size()) {
      throw InputError(path + ":" + std::to_string(number) +
                       ": expected user:password (both non-empty)");
    }
    return {line.substr(0, colon), line.substr(colon + 1)};
  }
  throw InputError(path + ": no user:password line");
}

// epochal_train_loss as a summary without quantiles: _sum is the sum of per-sample
// training losses, _count the samples. prometheus-cpp's Summary observes one value at a
// time; a step adds a whole batch, so this small collectable keeps the two sums itself.
class MetricsExporter::LossSummary final : public prometheus::Collectable {
 public:
  void Add(double loss_sum, int64_t samples) {
    std::lock_guard<std::mutex> lock(mutex_);
    sum_ += loss_sum;
    count_ += static_cast<uint64_t>(samples);
  }
  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily family;
    family.name = kLossSummaryName;
    family.help =
        "Per-sample training loss (cross-entropy plus any L2 penalty) summed over every "
        "sample trained (_sum) and the number of samples (_count); "
        "rate(_sum)/rate(_count) is the exact mean over a window";
    family.type = prometheus::MetricType::Summary;
    prometheus::ClientMetric m;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      m.summary.sample_sum = sum_;
      m.summary.sample_count = count_;
    }
    family.metric.push_back(std::move(m));
    return {family};
  }

 private:
  mutable std::mutex mutex_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct MetricsExporter::Families {
  // Families are created in the initializer list below, each recording its name here.
  std::vector<std::string> names;

  explicit Families(prometheus::Registry& registry)
      : names(),
        samples(CounterFamily(r(registry), "epochal_train_samples_total",
                              "Training samples processed, all ranks together")
                    .Add({})),
        correct(CounterFamily(r(registry), "epochal_train_correct_total",
                              "Training samples the model classified correctly as it trained "
                              "on them (training mode)")
                    .Add({})),
        steps(CounterFamily(r(registry), "epochal_steps_total", "Optimizer steps taken").Add({})),
        rank_samples(CounterFamily(r(registry), "epochal_rank_samples_total",
                                   "Training samples processed by each rank (updated when the "
                                   "ranks' timings are gathered, every few seconds)")),
        batch_loss(GaugeFamily(r(registry), "epochal_train_batch_loss",
                               "Mean per-sample loss of the last step's global batch")
                       .Add({})),
        epoch(GaugeFamily(r(registry), "epochal_epoch", "Current epoch (1-based)").Add({})),
        epochs_planned(
            GaugeFamily(r(registry), "epochal_epochs_planned", "Epochs the run is configured for")
                .Add({})),
        progress(GaugeFamily(r(registry), "epochal_epoch_progress",
                             "Fractional epochs trained, e.g. 1.5 half-way through epoch 2")
                     .Add({})),
        lr(GaugeFamily(r(registry), "epochal_learning_rate", "Learning rate of the last step")
               .Add({})),
        epoch_train_loss(GaugeFamily(r(registry), "epochal_epoch_train_loss",
                                     "L_run: mean per-sample training loss over the last "
                                     "completed epoch (Keras `loss`)")
                             .Add({})),
        epoch_train_accuracy(GaugeFamily(r(registry), "epochal_epoch_train_accuracy",
                                         "Training accuracy over the last completed epoch")
                                 .Add({})),
        epoch_val_loss(GaugeFamily(r(registry), "epochal_epoch_val_loss",
                                   "V: validation loss (inference mode) after the last "
                                   "completed epoch")
                           .Add({})),
        epoch_val_accuracy(GaugeFamily(r(registry), "epochal_epoch_val_accuracy",
                                       "Validation accuracy after the last completed epoch")
                               .Add({})),
        epoch_seconds(GaugeFamily(r(registry), "epochal_epoch_duration_seconds",
                                  "Wall time of the last completed epoch's training steps")
                          .Add({})),
        images_per_second(GaugeFamily(r(registry), "epochal_images_per_second",
                                      "Training throughput of the last completed epoch, all "
                                      "ranks together")
                              .Add({})),
        probe(GaugeFamily(r(registry), "epochal_probe_loss",
                          "Loss of the fixed training probe subset after the last completed "
                          "epoch: mode=\"train\" as training computes it (P_train), "
                          "mode=\"nodrop\" with batch statistics but no dropout or penalty "
                          "(P_nodrop), mode=\"eval\" in inference mode (P_eval)")),
        gap(GaugeFamily(r(registry), "epochal_gap_loss",
                        "Terms of val_loss - train_loss after the last completed epoch: "
                        "timing (P_train - L_run), dropout (P_nodrop - P_train: dropout and "
                        "L2), batchnorm (P_eval - P_nodrop), data (V - P_eval); "
                        "regularization = dropout + batchnorm")),
        gap_se(GaugeFamily(r(registry), "epochal_gap_loss_stderr",
                           "Standard error of each epochal_gap_loss term, from the per-sample "
                           "losses of the probe and validation passes")),
        aligned(GaugeFamily(r(registry), "epochal_aligned_train_loss",
                            "Aligned training loss of the latest boundary whose value is "
                            "known: mean batch loss over half an epoch on each side of it")
                    .Add({})),
        aligned_epoch(GaugeFamily(r(registry), "epochal_aligned_train_loss_epoch",
                                  "The epoch boundary epochal_aligned_train_loss belongs to "
                                  "(0 until the first is known)")
                          .Add({})),
        leakage(GaugeFamily(r(registry), "epochal_leakage_duplicates",
                            "Validation samples the leakage scan found duplicated from the "
                            "training set: kind=exact|near|photometric|shifted|mirrored (each "
                            "sample once, by its simplest kind), and kind=label_conflict")),
        finding(GaugeFamily(r(registry), "epochal_finding",
                            "1 while the diagnosis finding `name` holds at the last completed "
                            "epoch, else 0")),
        state(GaugeFamily(r(registry), "epochal_state",
                          "1 for the run's current state (starting, training, paused, "
                          "stopped, finished), 0 for the others")),
        info(GaugeFamily(r(registry), "epochal_job_info",
                         "Always 1; the labels describe the job (run name, config, ranks, "
                         "per-rank and global batch, epochs)")),
        step_seconds(HistogramFamily(r(registry), "epochal_step_seconds",
                                     "Wall time of one training step on each rank: data, "
                                     "forward, backward and exposed all-reduce wait")),
        data_wait(HistogramFamily(r(registry), "epochal_data_wait_seconds",
                                  "Time each rank's step waited for its batch data")),
        allreduce_wait(HistogramFamily(r(registry), "epochal_allreduce_wait_seconds",
                                       "Exposed gradient all-reduce wait per step and rank: "
                                       "the part of the all-reduce backward did not hide")) {}

  NamedRegistry r(prometheus::Registry& registry) { return {registry, names}; }

  Counter& samples;
  Counter& correct;
  Counter& steps;
  Family<Counter>& rank_samples;
  Gauge& batch_loss;
  Gauge& epoch;
  Gauge& epochs_planned;
  Gauge& progress;
  Gauge& lr;
  Gauge& epoch_train_loss;
  Gauge& epoch_train_accuracy;
  Gauge& epoch_val_loss;
  Gauge& epoch_val_accuracy;
  Gauge& epoch_seconds;
  Gauge& images_per_second;
  Family<Gauge>& probe;
  Family<Gauge>& gap;
  Family<Gauge>& gap_se;
  Gauge& aligned;
  Gauge& aligned_epoch;
  Family<Gauge>& leakage;
  Family<Gauge>& finding;
  Family<Gauge>& state;
  Family<Gauge>& info;
  Family<Histogram>& step_seconds;
  Family<Histogram>& data_wait;
  Family<Histogram>& allreduce_wait;
  std::map<std::string, Gauge*> findings;
  std::map<std::string, Gauge*> states;
  // Per rank: step, data wait, all-reduce wait histograms and the sample counter.
  struct RankMetrics {
    Histogram* histograms[train::RankTimingIncrements::kNumKinds];
    Counter* samples;
  };
  std::map<int, RankMetrics> ranks;
};

MetricsExporter::MetricsExporter()
    : registry_(std::make_shared<prometheus::Registry>()),
      loss_(std::make_shared<LossSummary>()),
      f_(std::make_unique<Families>(*registry_)) {
  for (const char* name : kFindingNames) f_->findings[name] = &f_->finding.Add({{"name", name}});
  for (const char* s : kStates) f_->states[s] = &f_->state.Add({{"state", s}});
  SetState("starting");
}

void MetricsExporter::SetJobInfo(const JobInfo& job) {
  f_->info
      .Add({{"run", job.run},
            {"config", job.config},
            {"ranks", std::to_string(job.ranks)},
            {"per_rank_batch", std::to_string(job.per_rank_batch)},
            {"global_batch", std::to_string(job.global_batch)},
            {"epochs", std::to_string(job.epochs)}})
      .Set(1);
  f_->epochs_planned.Set(job.epochs);
}

MetricsExporter::~MetricsExporter() {
  exposer_.reset();  // Stop serving before the metrics go.
}

int MetricsExporter::Listen(const ExporterOptions& options) {
  // An IPv6 address goes in brackets (civetweb's syntax); Debian's build refuses it all
  // the same, with the error below.
  const bool v6 = options.bind_address.find(':') != std::string::npos;
  const std::string address = (v6 ? "[" + options.bind_address + "]" : options.bind_address) + ":" +
                              std::to_string(options.port);
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    throw InputError("metrics: cannot listen on " + address + " (" + e.what() +
                     "); choose another --metrics-port or --metrics-bind");
  }
  if (options.auth) {
    const BasicAuth auth = *options.auth;
    exposer_->RegisterAuth(
        [auth](const std::string& user, const std::string& password) {
          // Both compared in full (no short circuit), each in constant time.
          const bool user_ok = ConstantTimeEquals(user, auth.user);
          const bool password_ok = ConstantTimeEquals(password, auth.password);
          return user_ok & password_ok;
        },
        "epochal metrics");
  }
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(loss_);
  const std::vector<int> ports = exposer_->GetListeningPorts();
  port_ = ports.empty() ? options.port : ports.front();
  return port_;
}

std::string MetricsExporter::Scrape() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (auto& f : loss_->Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

std::vector<std::string> MetricsExporter::FamilyNames() const {
  std::vector<std::string> names = f_->names;
  names.push_back(kLossSummaryName);
  return names;
}

void MetricsExporter::SetState(const std::string& state) {
  for (auto& [name, gauge] : f_->states) gauge->Set(name == state ? 1.0 : 0.0);
}

void MetricsExporter::SetLeakage(const LeakageCounts& c) {
  for (const auto& [kind, count] : {std::pair{"exact", c.exact},
                                    {"near", c.near},
                                    {"photometric", c.photometric},
                                    {"shifted", c.shifted},
                                    {"mirrored", c.mirrored},
                                    {"label_conflict", c.label_conflicts}}) {
    f_->leakage.Add({{"kind", kind}}).Set(static_cast<double>(count));
  }
}

void MetricsExporter::OnEpochStart(int epoch, int total_epochs, int64_t /*samples*/) {
  f_->epoch.Set(epoch);
  f_->epochs_planned.Set(total_epochs);
  SetState("training");
}

void MetricsExporter::OnStep(const train::StepEvent& e) {
  loss_->Add(e.batch_loss * static_cast<double>(e.batch_samples), e.batch_samples);
  f_->samples.Increment(static_cast<double>(e.batch_samples));
  f_->correct.Increment(static_cast<double>(e.batch_correct));
  f_->steps.Increment();
  f_->batch_loss.Set(e.batch_loss);
  f_->progress.Set(e.epoch_progress);
  f_->lr.Set(e.learning_rate);
  if (history_ != nullptr) PublishAligned(*history_);
}

void MetricsExporter::PublishAligned(const train::History& history) {
  // The latest boundary with a known aligned loss; it appears half-way through the next
  // epoch, so scanning back from the end stops after a step or two.
  for (auto it = history.epochs.rbegin(); it != history.epochs.rend(); ++it) {
    if (it->epoch <= aligned_published_) return;
    if (it->aligned_train_loss) {
      f_->aligned.Set(*it->aligned_train_loss);
      f_->aligned_epoch.Set(it->epoch);
      aligned_published_ = it->epoch;
      return;
    }
  }
}

void MetricsExporter::OnEpochEnd(const train::EpochRecord& r, const train::EvalResult&,
                                 const train::History& history) {
  f_->epoch_train_loss.Set(r.loss);
  f_->epoch_train_accuracy.Set(r.accuracy);
  f_->epoch_val_loss.Set(r.val_loss);
  f_->epoch_val_accuracy.Set(r.val_accuracy);
  f_->epoch_seconds.Set(r.seconds);
  f_->images_per_second.Set(r.images_per_second);
  if (r.probe_train_loss) f_->probe.Add({{"mode", "train"}}).Set(*r.probe_train_loss);
  if (r.probe_nodrop_loss) f_->probe.Add({{"mode", "nodrop"}}).Set(*r.probe_nodrop_loss);
  if (r.probe_eval_loss) f_->probe.Add({{"mode", "eval"}}).Set(*r.probe_eval_loss);
  for (const auto& [term, value, se] :
       {std::tuple{"timing", r.gap_timing, r.gap_timing_se},
        {"dropout", r.gap_dropout, r.gap_dropout_se},
        {"batchnorm", r.gap_batchnorm, r.gap_batchnorm_se},
        {"regularization", r.gap_regularization, r.gap_regularization_se},
        {"data", r.gap_data, r.gap_data_se}}) {
    if (value) f_->gap.Add({{"term", term}}).Set(*value);
    if (se) f_->gap_se.Add({{"term", term}}).Set(*se);
  }
  for (auto& [name, gauge] : f_->findings) gauge->Set(0.0);
  for (const std::string& text : r.findings) {
    const std::string name = FindingName(text);
    auto it = f_->findings.find(name);
    if (it == f_->findings.end()) {
      it = f_->findings.emplace(name, &f_->finding.Add({{"name", name}})).first;
    }
    it->second->Set(1.0);
  }
  PublishAligned(history);
}

void MetricsExporter::OnTrainingEnd(const train::History& history, const train::EvalResult&) {
  PublishAligned(history);
  bool stopped = false;
  for (const auto& c : history.control_events) stopped = stopped || c.action == "stop";
  SetState(stopped ? "stopped" : "finished");
}

void MetricsExporter::OnControl(const train::ControlEvent& event) {
  if (event.action == "pause") SetState("paused");
  if (event.action == "resume") SetState("training");
  if (event.action == "stop") SetState("stopped");
}

void MetricsExporter::OnRankTimings(const train::RankTimingSnapshot& snapshot) {
  using K = train::RankTimingIncrements;
  const std::vector<double> bounds(train::kTimingBucketBounds.begin(),
                                   train::kTimingBucketBounds.end());
  for (const K& inc : snapshot.ranks) {
    auto it = f_->ranks.find(inc.rank);
    if (it == f_->ranks.end()) {
      const prometheus::Labels labels = {{"rank", std::to_string(inc.rank)}};
      Families::RankMetrics m{};
      m.histograms[K::kStep] = &f_->step_seconds.Add(labels, bounds);
      m.histograms[K::kDataWait] = &f_->data_wait.Add(labels, bounds);
      m.histograms[K::kAllreduceWait] = &f_->allreduce_wait.Add(labels, bounds);
      m.samples = &f_->rank_samples.Add(labels);
      it = f_->ranks.emplace(inc.rank, m).first;
    }
    for (size_t k = 0; k < K::kNumKinds; ++k) {
      it->second.histograms[k]->ObserveMultiple(inc.counts[k], inc.sums[k]);
    }
    it->second.samples->Increment(inc.samples);
  }
}

}  // namespace epochal::metrics
