#include "epochal/report/history_writer.h"

#include <cmath>
#include <optional>
#include <type_traits>
#include <variant>

#include "epochal/core/atomic_file.h"
#include "epochal/report/json_writer.h"

namespace epochal::report {
namespace {

bool IsBlank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

// Writes field `f` of `e` as the next member of the open JSON object.
void WriteJsonField(const train::EpochField& f, const train::EpochRecord& e, JsonWriter& json) {
  json.Key(f.name);
  std::visit(
      [&](auto member) {
        const auto& value = e.*member;
        if constexpr (std::is_same_v<std::decay_t<decltype(value)>, int>) {
          json.Int(value);
        } else {
          json.Number(value);
        }
      },
      f.member);
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

// Appends field `f` of `e` as a CSV cell.
void AppendCsvField(const train::EpochField& f, const train::EpochRecord& e, std::string* out) {
  std::visit(
      [&](auto member) {
        const auto& value = e.*member;
        if constexpr (std::is_same_v<std::decay_t<decltype(value)>, int>) {
          out->append(std::to_string(value));
        } else {
          AppendCsvNumber(value, out);
        }
      },
      f.member);
}

template <size_t N>
void AppendCsvHeader(const std::array<std::string_view, N>& columns, std::string* out) {
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out->push_back(',');
    out->append(columns[i]);
  }
  out->push_back('\n');
}

void WriteEpoch(const train::EpochRecord& e, JsonWriter* out) {
  JsonWriter& json = *out;
  {
    json.BeginObject();
    for (const train::EpochField& f : train::kEpochFields) {
      if (f.column) WriteJsonField(f, e, json);
    }
    json.Key("findings").BeginArray();
    for (const std::string& finding : e.findings) json.String(finding);
    json.EndArray();
    // The shifted curve: L_run(e) describes the model about half an epoch earlier.
    json.Key("shifted_epoch").Number(e.epoch - 0.5);
    if (!e.dominant_term.empty()) json.Key("dominant_term").String(e.dominant_term);
    for (const train::EpochField& f : train::kEpochFields) {
      if (!f.column) WriteJsonField(f, e, json);
    }
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
}

void WriteEpochs(const train::History& history, JsonWriter* out) {
  out->BeginArray();
  for (const train::EpochRecord& e : history.epochs) WriteEpoch(e, out);
  out->EndArray();
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
  // A stopped run's unfinished last epoch: training figures only (docs/loss-gap.md).
  if (history.partial_epoch) {
    json.Key("partial_epoch");
    WriteEpoch(*history.partial_epoch, &json);
  }
  json.Key("absent_terms").BeginArray();
  for (const std::string& t : history.absent_terms) json.String(t);
  json.EndArray();

  json.Key("world_size").Int(history.world_size);
  if (!history.precision.empty()) {
    json.Key("precision").BeginObject().Key("used").String(history.precision);
    json.Key("reason").String(history.precision_reason).EndObject();
  }
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
        .Key(kBatchColumns[3])
        .Int(b.samples)
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
    for (const train::EpochField& f : train::kEpochFields) {
      if (!f.column) continue;
      AppendCsvField(f, e, &out);
      out.push_back(',');
    }
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
    out.push_back(',');
    out.append(std::to_string(b.samples));
    out.push_back('\n');
  }
  return out;
}

std::string PartialEpochJson(const train::History& history, int indent) {
  if (!history.partial_epoch) return "";
  JsonWriter json(indent);
  WriteEpoch(*history.partial_epoch, &json);
  return json.str();
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
