#include "epochal/report/history_writer.h"

#include <cmath>
#include <optional>

#include "epochal/core/atomic_file.h"
#include "epochal/report/json_writer.h"

namespace epochal::report {
namespace {

bool IsBlank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// The numeric epoch fields after `epoch`, in kEpochColumns order (findings excluded).
std::array<std::optional<double>, 13> EpochValues(const train::EpochRecord& e) {
  return {e.loss,
          e.accuracy,
          e.val_loss,
          e.val_accuracy,
          e.probe_train_loss,
          e.probe_eval_loss,
          e.gap_timing,
          e.gap_regularization,
          e.gap_data,
          e.aligned_train_loss,
          e.seconds,
          e.images_per_second,
          e.lr};
}

void AppendCsvCell(std::string_view cell, std::string* out) {
  if (cell.find_first_of(",\"\r\n") == std::string_view::npos) {
    out->append(cell);
    return;
  }
  out->push_back('"');
  for (char c : cell) {
    if (c == '"') out->push_back('"');
    out->push_back(c);
  }
  out->push_back('"');
}

void AppendCsvNumber(std::optional<double> value, std::string* out) {
  if (value && std::isfinite(*value)) out->append(FormatJsonNumber(*value));
}

template <size_t N>
void AppendCsvHeader(const std::array<std::string_view, N>& columns, std::string* out) {
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out->push_back(',');
    out->append(columns[i]);
  }
  out->push_back('\n');
}

void WriteEpochs(const train::History& history, JsonWriter* out) {
  JsonWriter& json = *out;
  json.BeginArray();
  for (const train::EpochRecord& e : history.epochs) {
    json.BeginObject().Key(kEpochColumns[0]).Int(e.epoch);
    const auto values = EpochValues(e);
    for (size_t i = 0; i < values.size(); ++i) json.Key(kEpochColumns[i + 1]).Number(values[i]);
    json.Key(kEpochColumns[14]).BeginArray();
    for (const std::string& finding : e.findings) json.String(finding);
    json.EndArray();
    // The shifted curve: L_run(e) describes the model about half an epoch earlier.
    json.Key("shifted_epoch").Number(e.epoch - 0.5);
    if (!e.dominant_term.empty()) json.Key("dominant_term").String(e.dominant_term);
    // Timings of the coordinator's work after the epoch (not in `seconds`).
    json.Key("validation_seconds").Number(e.validation_seconds);
    json.Key("probe_seconds").Number(e.probe_seconds);
    const auto vec = [&json](const char* key, const std::vector<double>& v) {
      if (v.empty()) return;
      json.Key(key).BeginArray();
      for (double x : v) json.Number(x);
      json.EndArray();
    };
    vec("val_class_loss", e.val_class_loss);
    vec("val_class_accuracy", e.val_class_accuracy);
    vec("probe_class_loss", e.probe_class_loss);
    vec("probe_class_accuracy", e.probe_class_accuracy);
    if (!e.rank_timings.empty()) {
      json.Key("rank_timings").BeginArray();
      for (const auto& t : e.rank_timings) {
        json.BeginObject()
            .Key("step_ms")
            .Number(t.step_ms)
            .Key("data_ms")
            .Number(t.data_ms)
            .Key("compute_ms")
            .Number(t.compute_ms)
            .Key("allreduce_wait_ms")
            .Number(t.allreduce_wait_ms)
            .Key("allreduce_ms")
            .Number(t.allreduce_ms)
            .Key("straggler_wait_ms")
            .Number(t.straggler_wait_ms)
            .EndObject();
      }
      json.EndArray();
    }
    if (!e.replica_hashes.empty()) {
      json.Key("replica_hashes").BeginArray();
      for (const std::string& h : e.replica_hashes) json.String(h);
      json.EndArray();
    }
    json.EndObject();
  }
  json.EndArray();
}

}  // namespace

std::string HistoryJson(const train::History& history, int indent) {
  JsonWriter json(indent);
  json.BeginObject();
  json.Key("config");
  if (IsBlank(history.config_json)) {
    json.BeginObject().EndObject();
  } else {
    json.Raw(history.config_json);
  }

  json.Key("epochs");
  WriteEpochs(history, &json);

  json.Key("world_size").Int(history.world_size);
  json.Key("control_events").BeginArray();
  for (const train::ControlEvent& c : history.control_events) {
    json.BeginObject().Key("step").Int(c.step).Key("action").String(c.action);
    if (c.action == "set_learning_rate") json.Key("learning_rate").Number(c.learning_rate);
    json.EndObject();
  }
  json.EndArray();

  json.Key("batches").BeginArray();
  for (const train::BatchRecord& b : history.batches) {
    json.BeginObject()
        .Key(kBatchColumns[0])
        .Number(b.epoch_progress)
        .Key(kBatchColumns[1])
        .Number(b.loss)
        .Key(kBatchColumns[2])
        .Number(b.lr)
        .EndObject();
  }
  json.EndArray();
  json.EndObject();
  std::string out = json.str();
  out.push_back('\n');
  return out;
}

std::string HistoryCsv(const train::History& history) {
  std::string out;
  AppendCsvHeader(kEpochColumns, &out);
  for (const train::EpochRecord& e : history.epochs) {
    out.append(std::to_string(e.epoch));
    for (const std::optional<double>& v : EpochValues(e)) {
      out.push_back(',');
      AppendCsvNumber(v, &out);
    }
    out.push_back(',');
    std::string findings;
    for (size_t i = 0; i < e.findings.size(); ++i) {
      if (i > 0) findings.push_back(';');
      findings.append(e.findings[i]);
    }
    AppendCsvCell(findings, &out);
    out.push_back('\n');
  }
  return out;
}

std::string BatchesCsv(const train::History& history) {
  std::string out;
  AppendCsvHeader(kBatchColumns, &out);
  for (const train::BatchRecord& b : history.batches) {
    AppendCsvNumber(b.epoch_progress, &out);
    out.push_back(',');
    AppendCsvNumber(b.loss, &out);
    out.push_back(',');
    AppendCsvNumber(b.lr, &out);
    out.push_back('\n');
  }
  return out;
}

std::string EpochsJson(const train::History& history, int indent) {
  JsonWriter json(indent);
  WriteEpochs(history, &json);
  return json.str();
}

void WriteHistoryFiles(const train::History& history, const std::filesystem::path& dir) {
  WriteFileAtomic(dir / "history.json", HistoryJson(history));
  WriteFileAtomic(dir / "history.csv", HistoryCsv(history));
  WriteFileAtomic(dir / "batches.csv", BatchesCsv(history));
}

}  // namespace epochal::report
