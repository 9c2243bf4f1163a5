#include "epochal/report/history_writer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "epochal/core/error.h"
#include "epochal/report/history_reader.h"
#include "epochal/train/config.h"
#include "temp_dir.h"

namespace epochal::report {
namespace {

using testing::ReadFile;
using testing::TempDir;

train::History SampleHistory() {
  train::History h;
  h.config_json = R"({"optimizer": {"learning_rate": 0.01}})";
  train::EpochRecord e1;
  e1.epoch = 1;
  e1.loss = 0.1 + 0.2;  // 0.30000000000000004: must survive the round trip
  e1.accuracy = 0.8181;
  e1.val_loss = 0.3281;
  e1.val_accuracy = 0.8815;
  e1.probe_train_loss = 0.41;
  e1.probe_eval_loss = 0.35;
  e1.gap_timing = 0.41 - e1.loss;
  e1.gap_regularization = 0.35 - 0.41;
  e1.gap_data = 0.3281 - 0.35;
  e1.aligned_train_loss = 0.44;
  e1.seconds = 131.5;
  e1.images_per_second = 456.25;
  e1.lr = 0.01;
  e1.findings = {"TIMING: gap -0.11", "REGULARIZATION: \"dropout\", L2"};
  train::EpochRecord e2;
  e2.epoch = 2;
  e2.loss = 0.3396;
  e2.val_loss = std::numeric_limits<double>::quiet_NaN();
  h.epochs = {e1, e2};
  h.batches = {{.epoch_progress = 0.5, .loss = 0.7, .lr = 0.01},
               {.epoch_progress = 1.0, .loss = 0.25, .lr = 0.0099}};
  return h;
}

// The text after `"key": ` at or after `from`.
double NumberAfter(const std::string& json, const std::string& key, size_t from = 0) {
  const std::string needle = "\"" + key + "\": ";
  const size_t pos = json.find(needle, from);
  EXPECT_NE(pos, std::string::npos) << key;
  return std::strtod(json.c_str() + pos + needle.size(), nullptr);
}

TEST(HistoryWriterTest, JsonHasConfigEpochsAndBatches) {
  const train::History h = SampleHistory();
  const std::string json = HistoryJson(h);
  EXPECT_EQ(json.rfind("{\n  \"config\": {\"optimizer\": {\"learning_rate\": 0.01}},\n", 0), 0u)
      << json;
  EXPECT_EQ(NumberAfter(json, "loss"), 0.1 + 0.2);
  EXPECT_EQ(NumberAfter(json, "images_per_second"), 456.25);
  EXPECT_EQ(NumberAfter(json, "gap_data"), 0.3281 - 0.35);
  EXPECT_NE(json.find(R"("REGULARIZATION: \"dropout\", L2")"), std::string::npos);

  // The second epoch: absent optionals and NaN are null, findings empty.
  const size_t second = json.find("\"epoch\": 2");
  ASSERT_NE(second, std::string::npos);
  EXPECT_NE(json.find("\"val_loss\": null", second), std::string::npos);
  EXPECT_NE(json.find("\"probe_train_loss\": null", second), std::string::npos);
  EXPECT_NE(json.find("\"aligned_train_loss\": null", second), std::string::npos);
  EXPECT_NE(json.find("\"findings\": []", second), std::string::npos);

  const size_t batches = json.find("\"batches\": [");
  ASSERT_NE(batches, std::string::npos);
  EXPECT_EQ(NumberAfter(json, "epoch_progress", batches), 0.5);
  EXPECT_EQ(NumberAfter(json, "lr", json.find("\"epoch_progress\": 1", batches)), 0.0099);
}

TEST(HistoryWriterTest, EpochKeysInDocumentedOrder) {
  const std::string json = HistoryJson(SampleHistory());
  size_t pos = json.find("\"epochs\": [");
  ASSERT_NE(pos, std::string::npos);
  for (std::string_view key : kEpochColumns) {
    const size_t next = json.find("\"" + std::string(key) + "\": ", pos);
    ASSERT_NE(next, std::string::npos) << key;
    EXPECT_LT(json.find("\"epoch\": 2", pos), std::string::npos);
    EXPECT_LT(next, json.find("\"epoch\": 2")) << key << " missing from the first epoch";
    pos = next;
  }
}

TEST(HistoryWriterTest, EmptyConfigIsEmptyObject) {
  train::History h;
  EXPECT_EQ(HistoryJson(h),
            "{\n  \"config\": {},\n  \"epochs\": [],\n  \"absent_terms\": [],\n"
            "  \"world_size\": 1,\n  \"control_events\": [],\n  \"batches\": []\n}\n");
  EXPECT_EQ(HistoryJson(h, 0),
            "{\"config\":{},\"epochs\":[],\"absent_terms\":[],\"world_size\":1,"
            "\"control_events\":[],\"batches\":[]}\n");
}

TEST(HistoryWriterTest, CsvHeadersAreExact) {
  const train::History h;
  EXPECT_EQ(HistoryCsv(h),
            "epoch,loss,accuracy,val_loss,val_accuracy,probe_train_loss,probe_nodrop_loss,"
            "probe_eval_loss,gap_timing,gap_dropout,gap_batchnorm,gap_data,gap_regularization,"
            "gap_timing_se,gap_dropout_se,gap_batchnorm_se,gap_data_se,gap_regularization_se,"
            "aligned_train_loss,seconds,images_per_second,lr,epoch_fraction,findings\n");
  EXPECT_EQ(BatchesCsv(h), "epoch_progress,loss,lr,samples\n");
}

TEST(HistoryWriterTest, CsvRowsUseEmptyCellsForNullAndQuoteFindings) {
  const train::History h = SampleHistory();
  const std::string csv = HistoryCsv(h);
  const size_t row1 = csv.find('\n') + 1;
  const size_t row2 = csv.find('\n', row1) + 1;
  EXPECT_EQ(csv.substr(row2), "2,0.3396,0,,0,,,,,,,,,,,,,,,0,0,0,1,\n");
  EXPECT_EQ(csv.substr(row1, 4), "1,0.");
  // Findings joined with ';', quoted because they hold ',' and '"'.
  EXPECT_NE(csv.find(",\"TIMING: gap -0.11;REGULARIZATION: \"\"dropout\"\", L2\"\n"),
            std::string::npos)
      << csv;
  EXPECT_EQ(BatchesCsv(h), "epoch_progress,loss,lr,samples\n0.5,0.7,0.01,0\n1,0.25,0.0099,0\n");
}

TEST(HistoryWriterTest, WritesThreeFilesAtomically) {
  TempDir dir;
  const train::History h = SampleHistory();
  WriteHistoryFiles(h, dir.path());
  // A second write replaces the first.
  WriteHistoryFiles(h, dir.path());
  EXPECT_EQ(ReadFile(dir.path() / "history.json"), HistoryJson(h));
  EXPECT_EQ(ReadFile(dir.path() / "history.csv"), HistoryCsv(h));
  EXPECT_EQ(ReadFile(dir.path() / "batches.csv"), BatchesCsv(h));
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_NE(entry.path().extension(), ".tmp");
    ++files;
  }
  EXPECT_EQ(files, 3u);
}

// The precision the run used is kept with its reason, read back, and checked.
TEST(HistoryWriterTest, PrecisionRoundTripsAndABadOneIsNamed) {
  TempDir dir;
  train::History h;  // No epochs: the reader wants complete ones.
  // The reader checks the config: the reference one.
  h.config_json = train::ConfigToJson(train::LoadExperimentConfig(
      std::string(EPOCHAL_SOURCE_DIR) + "/configs/fashion_mnist_minivggnet.textproto"));
  h.precision = "f32";
  h.precision_reason = "precision auto: f32, a bf16 training step measured 0.74x";
  WriteHistoryFiles(h, dir.path());
  const std::string json = ReadFile(dir.path() / "history.json");
  EXPECT_NE(json.find("\"precision\": {\n    \"used\": \"f32\""), std::string::npos) << json;
  const RunHistory back = ReadHistoryJson(dir.path() / "history.json");
  EXPECT_EQ(back.history.precision, "f32");
  EXPECT_EQ(back.history.precision_reason, h.precision_reason);
  // Unknown before it was kept: no key, nothing read.
  EXPECT_EQ(HistoryJson(SampleHistory()).find("\"precision\""), std::string::npos);

  std::string bad = json;
  const std::string used = "\"used\": \"f32\"";
  bad.replace(bad.find(used), used.size(), "\"used\": \"f16\"");
  std::ofstream(dir.path() / "history.json") << bad;
  try {
    ReadHistoryJson(dir.path() / "history.json");
    ADD_FAILURE() << "f16 was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("precision.used"), std::string::npos) << e.what();
  }
}

TEST(HistoryWriterTest, MissingDirectoryThrowsSystemError) {
  TempDir dir;
  const auto out = dir.path() / "no_such_dir";
  try {
    WriteHistoryFiles(SampleHistory(), out);
    FAIL() << "expected SystemError";
  } catch (const SystemError& e) {
    EXPECT_NE(std::string(e.what()).find((out / "history.json").string()), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace epochal::report
