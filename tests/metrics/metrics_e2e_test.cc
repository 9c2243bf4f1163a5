// End to end: the epochal binary's /metrics while it trains on real Fashion-MNIST.
//
//   - Lint: a scrape taken mid-training (second epoch running) passes
//     `promtool check metrics`, and --metrics-port 0 prints the port it chose.
//   - Auth: with --metrics-auth-file, the running binary answers 401 without (or with
//     wrong) credentials and 200 with the right ones.
//   - Real Prometheus: /usr/bin/prometheus, on a free loopback port with a generated
//     config, scrapes a 2-rank run every second; afterwards its HTTP API answers every
//     PromQL expression of the Grafana dashboard, epochal_train_samples_total equals
//     the samples trained, and the final epoch gauges equal history.json.
//
// Every wait is bounded; every process started is killed (process group) on failure.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "metrics_test_util.h"
#include "process_util.h"

namespace epochal::metrics {
namespace {

namespace fs = std::filesystem;
using google::protobuf::Struct;
using google::protobuf::Value;
using test::BackgroundProcess;
using test::HttpGet;
using test::ReadFile;
using test::TempDir;

constexpr char kBinary[] = EPOCHAL_BINARY;
constexpr char kMpiexec[] = EPOCHAL_MPIEXEC;
constexpr char kSourceDir[] = EPOCHAL_SOURCE_DIR;
constexpr char kPrometheus[] = "/usr/bin/prometheus";
constexpr char kPromtool[] = "/usr/bin/promtool";
const std::vector<std::string> kMpiEnv = {"OMPI_ALLOW_RUN_AS_ROOT=1",
                                          "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"};

using Clock = std::chrono::steady_clock;

std::string Config() {
  return (fs::path(kSourceDir) / "configs/fashion_mnist_minivggnet.textproto").string();
}

std::vector<std::string> TrainArgs(const fs::path& out, int limit_train, int epochs) {
  return {"train",
          "--config",
          Config(),
          "--limit-train",
          std::to_string(limit_train),
          "--limit-val",
          "500",
          "--epochs",
          std::to_string(epochs),
          "--batch-size",
          "32",
          "--threads",
          "1",
          "--out",
          out.string()};
}

Value ParseJson(const std::string& text) {
  Value v;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(text, &v).ok()) << text.substr(0, 500);
  return v;
}

const Value& Field(const Value& v, const std::string& key) {
  static const Value kNull;
  if (!v.has_struct_value()) return kNull;
  auto it = v.struct_value().fields().find(key);
  return it == v.struct_value().fields().end() ? kNull : it->second;
}

// The value of `name` (exact series key "name{labels}" or bare name) in exposition text.
std::optional<double> Sample(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + " ", 0) == 0) return std::stod(line.substr(key.size() + 1));
  }
  return std::nullopt;
}

// Waits (bounded) for `pattern` in the file at `path`; returns the first match's group 1.
std::string WaitForOutput(const fs::path& path, const std::regex& pattern, BackgroundProcess& p,
                          double seconds) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    std::smatch m;
    const std::string text = ReadFile(path);
    if (std::regex_search(text, m, pattern)) return m[1];
    if (!p.Running()) return "";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return "";
}

// Polls /metrics until `ready` holds for a scrape; returns that scrape (empty: never).
template <typename F>
std::string ScrapeWhen(int port, const std::optional<std::string>& auth, BackgroundProcess& p,
                       double seconds, F ready) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline && p.Running()) {
    const test::HttpResponse r = HttpGet(port, "/metrics", auth);
    if (r.status == 200 && ready(r.body)) return r.body;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return "";
}

bool MidTraining(const std::string& body) {
  return Sample(body, "epochal_epoch").value_or(0) >= 2 &&
         Sample(body, "epochal_state{state=\"training\"}").value_or(0) == 1;
}

TEST(MetricsEndToEnd, MidTrainingScrapePassesPromtoolAndPortZeroIsPrinted) {
  TempDir dir("metrics_lint");
  std::vector<std::string> cmd = {kBinary};
  for (const auto& a : TrainArgs(dir.path() / "run", 1200, 2)) cmd.push_back(a);
  cmd.insert(cmd.end(), {"--metrics-port", "0", "--metrics-gather-seconds", "1"});
  const fs::path out = dir.path() / "out.txt", err = dir.path() / "err.txt";
  BackgroundProcess epochal(cmd, out.string(), err.string());
  ASSERT_TRUE(epochal.started());
  const std::string port_text =
      WaitForOutput(out, std::regex(R"(metrics: http://127\.0\.0\.1:(\d+)/metrics)"), epochal, 120);
  ASSERT_FALSE(port_text.empty()) << ReadFile(out) << ReadFile(err);
  const int port = std::stoi(port_text);
  ASSERT_GT(port, 0);

  const std::string scrape = ScrapeWhen(port, std::nullopt, epochal, 180, MidTraining);
  ASSERT_FALSE(scrape.empty()) << "no scrape during epoch 2; stdout:\n"
                               << ReadFile(out) << ReadFile(err);
  // The families a dashboard needs are all there mid-training.
  for (const char* name :
       {"epochal_train_loss_sum", "epochal_train_samples_total", "epochal_epoch_val_loss",
        "epochal_step_seconds_bucket{rank=\"0\",le=\"+Inf\"}", "epochal_job_info",
        "epochal_leakage_duplicates{kind=\"exact\"}", "epochal_gap_loss{term=\"timing\"}"}) {
    EXPECT_NE(scrape.find(name), std::string::npos) << name;
  }
  std::ofstream(dir.path() / "scrape.txt") << scrape;
  const test::Outcome lint = test::RunWithTimeout(
      dir.path(), 60,
      {"sh", "-c",
       std::string(kPromtool) + " check metrics < " + (dir.path() / "scrape.txt").string()});
  EXPECT_TRUE(lint.Succeeded()) << lint.Describe() << lint.out;
  EXPECT_EQ(lint.out + lint.err, "") << "promtool found problems";
  ASSERT_TRUE(epochal.WaitFor(240)) << "training did not finish";
  EXPECT_EQ(epochal.exit_code(), 0) << ReadFile(err);
}

TEST(MetricsEndToEnd, BasicAuthGives401WithoutCredentialsAnd200WithThem) {
  TempDir dir("metrics_auth");
  const fs::path auth_file = dir.path() / "auth";
  std::ofstream(auth_file) << "scraper:correct horse\n";
  fs::permissions(auth_file, fs::perms::owner_read | fs::perms::owner_write);
  std::vector<std::string> cmd = {kBinary};
  for (const auto& a : TrainArgs(dir.path() / "run", 500, 1)) cmd.push_back(a);
  cmd.insert(cmd.end(), {"--no-scan", "--metrics-port", "0", "--metrics-auth-file",
                         auth_file.string(), "--metrics-linger", "30"});
  const fs::path out = dir.path() / "out.txt", err = dir.path() / "err.txt";
  BackgroundProcess epochal(cmd, out.string(), err.string());
  const std::string port_text =
      WaitForOutput(out, std::regex(R"(metrics: http://127\.0\.0\.1:(\d+)/metrics \(basic auth\))"),
                    epochal, 120);
  ASSERT_FALSE(port_text.empty()) << ReadFile(out) << ReadFile(err);
  const int port = std::stoi(port_text);
  EXPECT_EQ(HttpGet(port, "/metrics").status, 401);
  EXPECT_EQ(HttpGet(port, "/metrics", "scraper:wrong").status, 401);
  const test::HttpResponse ok = HttpGet(port, "/metrics", "scraper:correct horse");
  EXPECT_EQ(ok.status, 200);
  EXPECT_NE(ok.body.find("epochal_train_samples_total"), std::string::npos);
  // The destructor ends the lingering run.
}

TEST(MetricsEndToEnd, BadMetricsFlagsAndABusyPortAreStartupErrors) {
  TempDir dir("metrics_flags");
  const auto run = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> cmd = {kBinary};
    for (const auto& a : TrainArgs(dir.path() / "run", 100, 1)) cmd.push_back(a);
    cmd.insert(cmd.end(), extra.begin(), extra.end());
    return test::RunWithTimeout(dir.path(), 120, cmd);
  };
  test::Outcome o = run({"--metrics-bind", "0.0.0.0"});
  EXPECT_EQ(o.code, 2) << o.Describe();
  EXPECT_TRUE(test::Contains(o.err, "--metrics-bind needs --metrics-port")) << o.err;
  o = run({"--metrics-port", "70000"});
  EXPECT_EQ(o.code, 2) << o.Describe();
  EXPECT_TRUE(test::Contains(o.err, "--metrics-port must be at most 65535")) << o.err;
  o = run({"--metrics-port", "0", "--metrics-auth-file", (dir.path() / "missing").string()});
  EXPECT_EQ(o.code, 2) << o.Describe();
  EXPECT_TRUE(test::Contains(o.err, "cannot read --metrics-auth-file")) << o.err;
  // A port something else listens on.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  o = run({"--metrics-port", std::to_string(ntohs(addr.sin_port))});
  ::close(fd);
  EXPECT_EQ(o.code, 2) << o.Describe();
  EXPECT_TRUE(test::Contains(o.err, "metrics: cannot listen on 127.0.0.1:")) << o.err;
}

// GET /api/v1/<path> on the Prometheus server; the parsed "data" of a success.
Value PromApi(int port, const std::string& path_and_query) {
  const test::HttpResponse r = HttpGet(port, "/api/v1/" + path_and_query);
  EXPECT_EQ(r.status, 200) << path_and_query << ": " << r.body;
  const Value v = ParseJson(r.body);
  EXPECT_EQ(Field(v, "status").string_value(), "success") << r.body;
  return Field(v, "data");
}

// Instant query at `time` (unix seconds); the result vector.
std::vector<Value> Query(int port, const std::string& expr, double time) {
  const Value data =
      PromApi(port, "query?query=" + test::UrlEncode(expr) + "&time=" + std::to_string(time));
  std::vector<Value> out;
  for (const Value& v : Field(data, "result").list_value().values()) out.push_back(v);
  return out;
}

double ValueOf(const Value& sample) {
  return std::stod(Field(sample, "value").list_value().values(1).string_value());
}

// The single value of `expr` at `time`, NaN when it has no (or several) results.
double Scalar(int port, const std::string& expr, double time) {
  const auto r = Query(port, expr, time);
  EXPECT_EQ(r.size(), 1u) << expr;
  return r.size() == 1 ? ValueOf(r[0]) : std::nan("");
}

void ExpectClose(double actual, double expected, const std::string& what) {
  EXPECT_NEAR(actual, expected, 1e-9 * std::max(1.0, std::abs(expected))) << what;
}

double NowUnix() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void CollectExprs(const Value& v, std::vector<std::string>* exprs) {
  if (v.has_struct_value()) {
    for (const auto& [key, child] : v.struct_value().fields()) {
      if ((key == "expr" || key == "definition") && child.has_string_value()) {
        exprs->push_back(child.string_value());
      }
      CollectExprs(child, exprs);
    }
  } else if (v.has_list_value()) {
    for (const Value& c : v.list_value().values()) CollectExprs(c, exprs);
  }
}

TEST(MetricsEndToEnd, RealPrometheusScrapesA2RankRunAndAnswersTheDashboard) {
  TempDir dir("metrics_prometheus");
  const int exporter_port = test::FreeLoopbackPort();
  const int prom_port = test::FreeLoopbackPort();
  ASSERT_NE(exporter_port, prom_port);
  std::ofstream(dir.path() / "prometheus.yml")
      << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
      << "scrape_configs:\n  - job_name: epochal-test\n    scrape_interval: 1s\n"
      << "    scrape_timeout: 900ms\n    static_configs:\n"
      << "      - targets: ['127.0.0.1:" << exporter_port << "']\n";
  BackgroundProcess prometheus(
      {kPrometheus, "--config.file=" + (dir.path() / "prometheus.yml").string(),
       "--storage.tsdb.path=" + (dir.path() / "tsdb").string(),
       "--web.listen-address=127.0.0.1:" + std::to_string(prom_port), "--log.level=warn"},
      (dir.path() / "prom.out").string(), (dir.path() / "prom.err").string());
  ASSERT_TRUE(prometheus.started());
  const auto ready_deadline = Clock::now() + std::chrono::seconds(60);
  while (HttpGet(prom_port, "/-/ready", std::nullopt, 2).status != 200) {
    ASSERT_TRUE(prometheus.Running()) << ReadFile(dir.path() / "prom.err");
    ASSERT_LT(Clock::now(), ready_deadline) << "prometheus not ready";
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }

  const double start = NowUnix();
  const fs::path run = dir.path() / "run";
  constexpr int kLimitTrain = 2000, kEpochs = 2;
  std::vector<std::string> cmd = {kMpiexec, "--oversubscribe", "--bind-to", "none", "-n", "2",
                                  kBinary};
  for (const auto& a : TrainArgs(run, kLimitTrain, kEpochs)) cmd.push_back(a);
  cmd.insert(cmd.end(), {"--metrics-port", std::to_string(exporter_port),
                         "--metrics-gather-seconds", "1", "--metrics-linger", "4"});
  const test::Outcome o = test::RunWithTimeout(dir.path(), 240, cmd, kMpiEnv);
  ASSERT_TRUE(o.Succeeded()) << o.Describe() << o.out;
  const double end = NowUnix();

  // The last scrape that saw the whole run: samples_total at its final value.
  const double expected_samples = kLimitTrain * kEpochs;
  const Value range =
      PromApi(prom_port, "query_range?query=" + test::UrlEncode("epochal_train_samples_total") +
                             "&start=" + std::to_string(start) + "&end=" + std::to_string(end + 1) +
                             "&step=1");
  const auto& series = Field(range, "result").list_value().values();
  ASSERT_EQ(series.size(), 1) << "no epochal_train_samples_total series scraped";
  double t = 0;
  int points = 0;
  for (const Value& point : Field(series[0], "values").list_value().values()) {
    ++points;
    if (std::stod(point.list_value().values(1).string_value()) == expected_samples) {
      t = point.list_value().values(0).number_value();
    }
  }
  ASSERT_GT(t, 0) << "Prometheus never saw the final sample count";
  EXPECT_GE(points, 5) << "fewer scrapes than expected during the run";
  ExpectClose(Scalar(prom_port, "epochal_train_samples_total", t), expected_samples,
              "samples trained");
  ExpectClose(Scalar(prom_port, "epochal_train_loss_count", t), expected_samples, "loss count");
  ExpectClose(Scalar(prom_port, "epochal_state{state=\"finished\"}", t), 1, "state finished");

  // Every dashboard expression answers, with the variables set to "all".
  const std::string dashboard =
      ReadFile(fs::path(kSourceDir) / "deploy/grafana/dashboards/epochal.json");
  std::vector<std::string> exprs;
  CollectExprs(ParseJson(dashboard), &exprs);
  ASSERT_FALSE(exprs.empty());
  for (std::string e : exprs) {
    std::smatch m;
    std::string label;
    if (std::regex_match(e, m, std::regex(R"(label_values\((.*),\s*(\w+)\))"))) {
      e = m[1];
      label = m[2];
    }
    e = std::regex_replace(e, std::regex(R"(\$__rate_interval)"), "5m");
    e = std::regex_replace(e, std::regex(R"(\$half_epoch_window)"), "5m");
    e = std::regex_replace(e, std::regex(R"(\$epoch_window)"), "10m");
    e = std::regex_replace(e, std::regex(R"(\$(job|rank))"), ".+");
    const auto result = Query(prom_port, e, t);
    EXPECT_FALSE(result.empty()) << "no data for dashboard expression " << e;
    if (!label.empty() && !result.empty()) {
      EXPECT_FALSE(Field(Field(result[0], "metric"), label).string_value().empty()) << e;
    }
  }
  // Both ranks' histograms arrived, and the gathers lost no step and no sample.
  EXPECT_EQ(Query(prom_port, "epochal_step_seconds_count", t).size(), 2u);
  const double steps = Scalar(prom_port, "epochal_steps_total", t);
  ExpectClose(Scalar(prom_port, "sum(epochal_step_seconds_count)", t), 2 * steps,
              "steps in the rank histograms");
  ExpectClose(Scalar(prom_port, "sum(epochal_allreduce_wait_seconds_count)", t), 2 * steps,
              "steps in the all-reduce histograms");
  ExpectClose(Scalar(prom_port, "sum(epochal_rank_samples_total)", t), expected_samples,
              "samples in the per-rank counters");

  // The final epoch gauges are history.json's last epoch.
  const Value history = ParseJson(ReadFile(run / "history.json"));
  const auto& epochs = Field(history, "epochs").list_value().values();
  ASSERT_EQ(epochs.size(), static_cast<size_t>(kEpochs));
  const Value& last = epochs[kEpochs - 1];
  const auto num = [&](const Value& e, const char* key) { return Field(e, key).number_value(); };
  ExpectClose(Scalar(prom_port, "epochal_epoch", t), kEpochs, "epoch");
  ExpectClose(Scalar(prom_port, "epochal_epoch_train_loss", t), num(last, "loss"), "loss");
  ExpectClose(Scalar(prom_port, "epochal_epoch_train_accuracy", t), num(last, "accuracy"),
              "accuracy");
  ExpectClose(Scalar(prom_port, "epochal_epoch_val_loss", t), num(last, "val_loss"), "val_loss");
  ExpectClose(Scalar(prom_port, "epochal_epoch_val_accuracy", t), num(last, "val_accuracy"),
              "val_accuracy");
  ExpectClose(Scalar(prom_port, "epochal_probe_loss{mode=\"train\"}", t),
              num(last, "probe_train_loss"), "probe_train_loss");
  ExpectClose(Scalar(prom_port, "epochal_probe_loss{mode=\"eval\"}", t),
              num(last, "probe_eval_loss"), "probe_eval_loss");
  ExpectClose(Scalar(prom_port, "epochal_probe_loss{mode=\"nodrop\"}", t),
              num(last, "probe_nodrop_loss"), "probe_nodrop_loss");
  for (const char* term : {"timing", "dropout", "batchnorm", "regularization", "data"}) {
    ExpectClose(Scalar(prom_port, std::string("epochal_gap_loss{term=\"") + term + "\"}", t),
                num(last, (std::string("gap_") + term).c_str()), term);
    ExpectClose(Scalar(prom_port, std::string("epochal_gap_loss_stderr{term=\"") + term + "\"}", t),
                num(last, (std::string("gap_") + term + "_se").c_str()), term);
  }
  ExpectClose(Scalar(prom_port, "epochal_images_per_second", t), num(last, "images_per_second"),
              "images_per_second");
  ExpectClose(Scalar(prom_port, "epochal_learning_rate", t), num(last, "lr"), "lr");
  // The last aligned loss known is boundary 1's (the last epoch's is never known).
  ExpectClose(Scalar(prom_port, "epochal_aligned_train_loss_epoch", t), kEpochs - 1,
              "aligned boundary");
  ExpectClose(Scalar(prom_port, "epochal_aligned_train_loss", t),
              num(epochs[kEpochs - 2], "aligned_train_loss"), "aligned_train_loss");
  // The exact whole-run mean loss from the counters equals history's sample-weighted mean.
  double loss_sum = 0;
  for (const Value& e : epochs) loss_sum += num(e, "loss") * kLimitTrain;
  ExpectClose(Scalar(prom_port, "epochal_train_loss_sum / epochal_train_samples_total", t),
              loss_sum / expected_samples, "whole-run mean loss");
  const auto batches = Field(history, "batches").list_value().values_size();
  ExpectClose(Scalar(prom_port, "epochal_steps_total", t), batches, "steps");
}

}  // namespace
}  // namespace epochal::metrics
