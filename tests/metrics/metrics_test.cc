// The exporter in-process: every family's values after a few trainer events, the exact
// loss sums, the per-rank histograms, basic auth over real HTTP, and the dashboard's
// references to the exporter's families.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "epochal/core/error.h"
#include "epochal/metrics/exporter.h"
#include "epochal/train/config.h"
#include "epochal/train/rank_timing.h"
#include "epochal/train/trainer.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "metrics_test_util.h"
#include "process_util.h"

namespace epochal::metrics {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Struct;
using google::protobuf::Value;

// "name{labels}" -> value, from exposition text.
std::map<std::string, double> ParseExposition(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

train::StepEvent Step(int epoch, int64_t step, double loss, int64_t n, int64_t correct) {
  train::StepEvent e;
  e.epoch = epoch;
  e.step_in_epoch = step;
  e.global_step = step;
  e.batch_loss = loss;
  e.batch_samples = n;
  e.batch_correct = correct;
  e.learning_rate = 0.01;
  e.epoch_progress = 0.25 * static_cast<double>(step);
  return e;
}

TEST(MetricsExporter, CountersGiveExactSumsAndGaugesFollowEvents) {
  MetricsExporter exporter;
  exporter.SetJobInfo({"run-1", "cfg", 2, 32, 64, 3});
  exporter.SetLeakage(
      {.exact = 4, .near = 2, .photometric = 3, .shifted = 5, .mirrored = 6, .label_conflicts = 1});
  exporter.OnEpochStart(1, 3, 200);
  exporter.OnStep(Step(1, 1, 2.5, 64, 10));
  exporter.OnStep(Step(1, 2, 1.25, 64, 30));
  exporter.OnStep(Step(1, 3, 0.5, 8, 7));
  auto m = ParseExposition(exporter.Scrape());
  EXPECT_DOUBLE_EQ(m["epochal_train_loss_sum"], 2.5 * 64 + 1.25 * 64 + 0.5 * 8);
  EXPECT_DOUBLE_EQ(m["epochal_train_loss_count"], 136);
  EXPECT_DOUBLE_EQ(m["epochal_train_samples_total"], 136);
  EXPECT_DOUBLE_EQ(m["epochal_train_correct_total"], 47);
  EXPECT_DOUBLE_EQ(m["epochal_steps_total"], 3);
  EXPECT_DOUBLE_EQ(m["epochal_train_batch_loss"], 0.5);
  EXPECT_DOUBLE_EQ(m["epochal_epoch"], 1);
  EXPECT_DOUBLE_EQ(m["epochal_epoch_progress"], 0.75);
  EXPECT_DOUBLE_EQ(m["epochal_learning_rate"], 0.01);
  EXPECT_DOUBLE_EQ(m["epochal_leakage_duplicates{kind=\"exact\"}"], 4);
  EXPECT_DOUBLE_EQ(m["epochal_leakage_duplicates{kind=\"near\"}"], 2);
  EXPECT_DOUBLE_EQ(m["epochal_leakage_duplicates{kind=\"label_conflict\"}"], 1);
  EXPECT_DOUBLE_EQ(m["epochal_leakage_duplicates{kind=\"photometric\"}"], 3);
  EXPECT_DOUBLE_EQ(m["epochal_leakage_duplicates{kind=\"shifted\"}"], 5);
  EXPECT_DOUBLE_EQ(m["epochal_leakage_duplicates{kind=\"mirrored\"}"], 6);
  EXPECT_DOUBLE_EQ(m["epochal_state{state=\"training\"}"], 1);
  EXPECT_DOUBLE_EQ(m["epochal_state{state=\"finished\"}"], 0);
  EXPECT_DOUBLE_EQ(m["epochal_job_info{config=\"cfg\",epochs=\"3\",global_batch=\"64\","
                     "per_rank_batch=\"32\",ranks=\"2\",run=\"run-1\"}"],
                   1);

  train::History history;
  train::EpochRecord r;
  r.epoch = 1;
  r.loss = 1.5;
  r.accuracy = 0.4;
  r.val_loss = 1.2;
  r.val_accuracy = 0.6;
  r.probe_train_loss = 1.4;
  r.probe_eval_loss = 1.3;
  r.gap_timing = -0.1;
  r.gap_regularization = -0.1;
  r.gap_data = -0.1;
  r.images_per_second = 321;
  r.seconds = 2;
  r.findings = {"TIMING: the timing term dominates", "NEW_FINDING: something"};
  history.epochs.push_back(r);
  exporter.WatchHistory(&history);
  exporter.OnEpochEnd(r, {}, history);
  m = ParseExposition(exporter.Scrape());
  EXPECT_DOUBLE_EQ(m["epochal_epoch_train_loss"], 1.5);
  EXPECT_DOUBLE_EQ(m["epochal_epoch_train_accuracy"], 0.4);
  EXPECT_DOUBLE_EQ(m["epochal_epoch_val_loss"], 1.2);
  EXPECT_DOUBLE_EQ(m["epochal_epoch_val_accuracy"], 0.6);
  EXPECT_DOUBLE_EQ(m["epochal_probe_loss{mode=\"train\"}"], 1.4);
  EXPECT_DOUBLE_EQ(m["epochal_probe_loss{mode=\"eval\"}"], 1.3);
  EXPECT_DOUBLE_EQ(m["epochal_gap_loss{term=\"timing\"}"], -0.1);
  EXPECT_DOUBLE_EQ(m["epochal_gap_loss{term=\"data\"}"], -0.1);
  EXPECT_DOUBLE_EQ(m["epochal_images_per_second"], 321);
  EXPECT_DOUBLE_EQ(m["epochal_finding{name=\"TIMING\"}"], 1);
  EXPECT_DOUBLE_EQ(m["epochal_finding{name=\"NEW_FINDING\"}"], 1);
  EXPECT_DOUBLE_EQ(m["epochal_finding{name=\"LEAKAGE\"}"], 0);
  EXPECT_DOUBLE_EQ(m["epochal_aligned_train_loss_epoch"], 0);

  // The aligned loss of boundary 1 appears with the step that makes it known.
  history.epochs[0].aligned_train_loss = 1.45;
  exporter.OnStep(Step(2, 1, 1.0, 64, 20));
  m = ParseExposition(exporter.Scrape());
  EXPECT_DOUBLE_EQ(m["epochal_aligned_train_loss"], 1.45);
  EXPECT_DOUBLE_EQ(m["epochal_aligned_train_loss_epoch"], 1);

  history.control_events.push_back({9, "stop", 0});
  exporter.OnTrainingEnd(history, {});
  m = ParseExposition(exporter.Scrape());
  EXPECT_DOUBLE_EQ(m["epochal_state{state=\"stopped\"}"], 1);
  EXPECT_DOUBLE_EQ(m["epochal_state{state=\"training\"}"], 0);
}

TEST(MetricsExporter, RankHistogramsAddTheGatheredIncrements) {
  train::RankTimingHistograms rank0, rank1;
  rank0.Add(0.003, 0.0002, 0.001, 32);
  rank0.Add(0.2, 0.0002, 0.05, 32);
  rank1.Add(0.004, 0.0004, 0.0, 30);
  std::vector<double> gathered(rank0.Packed().begin(), rank0.Packed().end());
  gathered.insert(gathered.end(), rank1.Packed().begin(), rank1.Packed().end());
  const train::RankTimingSnapshot snapshot = train::RankTimingHistograms::Unpack(gathered);
  ASSERT_EQ(snapshot.ranks.size(), 2u);
  EXPECT_EQ(snapshot.ranks[1].rank, 1);
  EXPECT_DOUBLE_EQ(snapshot.ranks[0].samples, 64);

  MetricsExporter exporter;
  exporter.OnRankTimings(snapshot);
  exporter.OnRankTimings(snapshot);  // Increments add up.
  auto m = ParseExposition(exporter.Scrape());
  EXPECT_DOUBLE_EQ(m["epochal_step_seconds_count{rank=\"0\"}"], 4);
  EXPECT_NEAR(m["epochal_step_seconds_sum{rank=\"0\"}"], 2 * 0.203, 1e-12);
  EXPECT_DOUBLE_EQ(m["epochal_step_seconds_bucket{rank=\"0\",le=\"0.005\"}"], 2);
  EXPECT_DOUBLE_EQ(m["epochal_step_seconds_bucket{rank=\"0\",le=\"0.25\"}"], 4);
  EXPECT_DOUBLE_EQ(m["epochal_step_seconds_bucket{rank=\"1\",le=\"+Inf\"}"], 2);
  EXPECT_DOUBLE_EQ(m["epochal_data_wait_seconds_bucket{rank=\"1\",le=\"0.0005\"}"], 2);
  EXPECT_DOUBLE_EQ(m["epochal_allreduce_wait_seconds_bucket{rank=\"0\",le=\"0.001\"}"], 2);
  EXPECT_DOUBLE_EQ(m["epochal_allreduce_wait_seconds_count{rank=\"0\"}"], 4);
  EXPECT_DOUBLE_EQ(m["epochal_rank_samples_total{rank=\"1\"}"], 60);

  rank0.Reset();
  for (double v : rank0.Packed()) EXPECT_EQ(v, 0.0);
}

TEST(BasicAuthTest, ConstantTimeEqualsComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("secret", "secret"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secreT"));
  EXPECT_FALSE(ConstantTimeEquals("secret", "secret2"));
  EXPECT_FALSE(ConstantTimeEquals("secret", ""));
  EXPECT_FALSE(ConstantTimeEquals(std::string("a\0b", 3), "a"));
}

TEST(BasicAuthTest, ReadsUserAndPasswordAndNamesBadFiles) {
  test::TempDir dir("metrics_auth");
  const fs::path good = dir.path() / "good";
  std::ofstream(good) << "# who may scrape\n\nprometheus:pa:ss word\n";
  ::chmod(good.c_str(), 0600);
  const BasicAuth auth = ReadBasicAuthFile(good.string());
  EXPECT_EQ(auth.user, "prometheus");
  EXPECT_EQ(auth.password, "pa:ss word");
  const fs::path bad = dir.path() / "bad";
  std::ofstream(bad) << "nocolon\n";
  try {
    ReadBasicAuthFile(bad.string());
    ADD_FAILURE() << "no error for a line without a colon";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(bad.string() + ":1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ReadBasicAuthFile((dir.path() / "missing").string()), InputError);
}

TEST(ExposerTest, ServesOnAFreePortAndRefusesABusyOne) {
  MetricsExporter exporter;
  const int port = exporter.Listen({"127.0.0.1", 0, std::nullopt});
  ASSERT_GT(port, 0);
  EXPECT_EQ(exporter.port(), port);
  exporter.OnStep(Step(1, 1, 1.0, 10, 5));
  const test::HttpResponse r = test::HttpGet(port, "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("epochal_steps_total 1"), std::string::npos) << r.body;
  MetricsExporter second;
  EXPECT_THROW(second.Listen({"127.0.0.1", port, std::nullopt}), InputError);
}

TEST(ExposerTest, BasicAuthRefusesMissingOrWrongCredentials) {
  MetricsExporter exporter;
  const int port = exporter.Listen({"127.0.0.1", 0, BasicAuth{"prom", "s3cret"}});
  ASSERT_GT(port, 0);
  EXPECT_EQ(test::HttpGet(port, "/metrics").status, 401);
  EXPECT_EQ(test::HttpGet(port, "/metrics", "prom:wrong").status, 401);
  EXPECT_EQ(test::HttpGet(port, "/metrics", "other:s3cret").status, 401);
  const test::HttpResponse ok = test::HttpGet(port, "/metrics", "prom:s3cret");
  EXPECT_EQ(ok.status, 200);
  EXPECT_NE(ok.body.find("epochal_train_samples_total"), std::string::npos);
}

// Every "expr" (panels) and variable query in the dashboard, and the panels' data sources.
void Walk(const Value& v, std::vector<std::string>* exprs, std::vector<std::string>* sources) {
  if (v.has_struct_value()) {
    for (const auto& [key, child] : v.struct_value().fields()) {
      if ((key == "expr" || key == "definition") && child.has_string_value()) {
        exprs->push_back(child.string_value());
      }
      if (key == "datasource" && child.has_struct_value()) {
        auto it = child.struct_value().fields().find("uid");
        sources->push_back(it == child.struct_value().fields().end() ? ""
                                                                     : it->second.string_value());
      }
      Walk(child, exprs, sources);
    }
  } else if (v.has_list_value()) {
    for (const Value& child : v.list_value().values()) Walk(child, exprs, sources);
  }
}

TEST(DashboardTest, ParsesAndRefersOnlyToExportedMetrics) {
  const fs::path path = fs::path(EPOCHAL_SOURCE_DIR) / "deploy/grafana/dashboards/epochal.json";
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  Value root;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(text.str(), &root).ok()) << path;
  std::vector<std::string> exprs, sources;
  Walk(root, &exprs, &sources);
  ASSERT_GE(exprs.size(), 14u);
  for (const std::string& s : sources) EXPECT_EQ(s, "${datasource}");

  MetricsExporter exporter;
  const std::vector<std::string> names = exporter.FamilyNames();
  const std::set<std::string> families(names.begin(), names.end());
  const std::regex metric("epochal_[a-z_]+");
  std::set<std::string> used;
  for (const std::string& e : exprs) {
    for (auto it = std::sregex_iterator(e.begin(), e.end(), metric); it != std::sregex_iterator();
         ++it) {
      std::string name = it->str();
      if (families.count(name) == 0) {
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
          if (name.ends_with(suffix)) name.resize(name.size() - std::strlen(suffix));
        }
      }
      EXPECT_EQ(families.count(name), 1u) << it->str() << " in " << e;
      used.insert(name);
    }
  }
  // The panels the dashboard promises.
  std::set<std::string> titles;
  for (const Value& p : root.struct_value().fields().at("panels").list_value().values()) {
    titles.insert(p.struct_value().fields().at("title").string_value());
  }
  for (const char* t :
       {"Batch loss", "Exact running mean training loss",
        "Epoch loss: training vs validation (unshifted)",
        "Shifted comparison: aligned training loss vs validation", "Loss gap terms (stacked)",
        "Validation accuracy", "Learning rate", "Images/s per rank", "Step time quantiles per rank",
        "Exposed all-reduce wait per step", "Active findings", "Leakage counts"}) {
    EXPECT_EQ(titles.count(t), 1u) << t;
  }
  std::set<std::string> variables;
  for (const Value& v : root.struct_value()
                            .fields()
                            .at("templating")
                            .struct_value()
                            .fields()
                            .at("list")
                            .list_value()
                            .values()) {
    variables.insert(v.struct_value().fields().at("name").string_value());
  }
  EXPECT_EQ(variables.count("job"), 1u);
  EXPECT_EQ(variables.count("rank"), 1u);
  // Every variable an expression uses is defined (or one of Grafana's own, $__...).
  const std::regex variable(R"(\$([A-Za-z_]+))");
  for (const std::string& e : exprs) {
    for (auto it = std::sregex_iterator(e.begin(), e.end(), variable); it != std::sregex_iterator();
         ++it) {
      const std::string name = (*it)[1];
      if (name.rfind("__", 0) == 0) continue;
      EXPECT_EQ(variables.count(name), 1u) << "$" << name << " in " << e;
    }
  }
}

class SnapshotCounter : public train::TrainingObserver {
 public:
  void OnRankTimings(const train::RankTimingSnapshot& s) override {
    ++snapshots;
    for (const auto& r : s.ranks) {
      for (double c : r.counts[train::RankTimingIncrements::kStep]) steps += c;
    }
  }
  int snapshots = 0;
  double steps = 0;
};

// The trainer feeds the exporter: counters match the history, and the timing gathers
// requested through the control extras (here after every step) lose no step.
TEST(TrainerToExporter, CountersMatchHistoryAndTimingGathersLoseNoStep) {
  const std::string d = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(d + "/train-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST";
  v1::ExperimentConfig config = train::LoadExperimentConfig(
      std::string(EPOCHAL_SOURCE_DIR) + "/configs/fashion_mnist_minivggnet.textproto");
  config.mutable_training()->set_epochs(2);
  config.mutable_training()->set_batch_size(50);
  config.mutable_analysis()->set_probe_samples(100);
  const data::Dataset train_set = data::LoadIdxDataset(d + "/train-images-idx3-ubyte.gz",
                                                       d + "/train-labels-idx1-ubyte.gz", 10, 230);
  const data::Dataset val_set = data::LoadIdxDataset(d + "/t10k-images-idx3-ubyte.gz",
                                                     d + "/t10k-labels-idx1-ubyte.gz", 10, 70);
  train::Trainer trainer(config, train_set, val_set);
  MetricsExporter exporter;
  SnapshotCounter counter;
  exporter.WatchHistory(&trainer.history());
  trainer.AddObserver(&exporter);
  trainer.AddObserver(&counter);
  trainer.SetRankTimingInterval(1e-9);  // A gather after every step.
  const train::History& h = trainer.Run();
  ASSERT_EQ(h.batches.size(), 10u);
  // 10 flagged gathers plus one per epoch end.
  EXPECT_EQ(counter.snapshots, 12);
  EXPECT_EQ(counter.steps, 10);
  auto m = ParseExposition(exporter.Scrape());
  EXPECT_DOUBLE_EQ(m["epochal_train_samples_total"], 460);
  EXPECT_DOUBLE_EQ(m["epochal_steps_total"], 10);
  EXPECT_DOUBLE_EQ(m["epochal_step_seconds_count{rank=\"0\"}"], 10);
  EXPECT_DOUBLE_EQ(m["epochal_rank_samples_total{rank=\"0\"}"], 460);
  const double mean = (h.epochs[0].loss + h.epochs[1].loss) / 2;  // 230 samples each.
  EXPECT_NEAR(m["epochal_train_loss_sum"] / m["epochal_train_loss_count"], mean, 1e-12);
  EXPECT_DOUBLE_EQ(m["epochal_epoch_val_loss"], h.epochs[1].val_loss);
  EXPECT_DOUBLE_EQ(m["epochal_aligned_train_loss"], *h.epochs[0].aligned_train_loss);
  EXPECT_DOUBLE_EQ(m["epochal_state{state=\"finished\"}"], 1);
}

}  // namespace
}  // namespace epochal::metrics
