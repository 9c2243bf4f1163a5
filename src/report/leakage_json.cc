#include "epochal/report/leakage_json.h"

#include "epochal/report/json_writer.h"

namespace epochal::report {
namespace {

using data::LeakagePair;
using data::LeakageReport;
using data::SplitDuplicates;

void WritePairs(const std::vector<LeakagePair>& pairs, JsonWriter* json) {
  json->BeginArray();
  for (const LeakagePair& p : pairs) {
    json->Raw("[" + std::to_string(p.train_index) + ", " + std::to_string(p.val_index) + ", " +
              FormatJsonNumber(p.rmse) + ", " + (p.label_conflict ? "true" : "false") + ", \"" +
              data::LeakageKindName(p.kind) + "\", " + (p.mirrored ? "true" : "false") + ", " +
              std::to_string(p.dx) + ", " + std::to_string(p.dy) + ", " + FormatJsonNumber(p.gain) +
              ", " + FormatJsonNumber(p.offset) + "]");
  }
  json->EndArray();
}

void WriteCounts(const std::vector<int64_t>& counts, JsonWriter* json) {
  std::string text = "[";
  for (size_t i = 0; i < counts.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(counts[i]);
  }
  json->Raw(text + "]");
}

void WriteDuplicates(const SplitDuplicates& d, JsonWriter* json) {
  json->BeginObject()
      .Key("exact_duplicate_samples")
      .Int(d.exact_duplicate_samples)
      .Key("groups")
      .Int(d.groups)
      .EndObject();
}

}  // namespace

std::string LeakageJson(const LeakageReport& r) {
  JsonWriter json(2);
  json.BeginObject();
  json.Key("near_rmse").Number(r.near_rmse);
  json.Key("train_samples").Int(r.train_samples);
  json.Key("val_samples").Int(r.val_scanned);
  json.Key("exact").Int(r.exact);
  json.Key("near").Int(r.near);
  json.Key("photometric").Int(r.photometric);
  json.Key("shifted").Int(r.shifted);
  json.Key("mirrored").Int(r.mirrored);
  json.Key("flagged").Int(r.flagged());
  json.Key("transforms").Bool(r.transforms);
  json.Key("transformed_rmse").Number(r.transformed_rmse);
  json.Key("max_shift").Int(r.max_shift);
  json.Key("label_conflicts").Int(r.label_conflicts);
  json.Key("pair_count").Int(r.pair_count);
  json.Key("pairs_truncated").Bool(r.pair_count > static_cast<int64_t>(r.pairs.size()));
  json.Key("pairs_columns")
      .Raw(
          R"(["train_index", "val_index", "rmse", "label_conflict", "kind", "mirrored", "dx", "dy", "gain", "offset"])");
  json.Key("pairs");
  WritePairs(r.pairs, &json);
  json.Key("train_duplicates");
  WriteDuplicates(r.train_duplicates, &json);
  json.Key("val_duplicates");
  WriteDuplicates(r.val_duplicates, &json);
  json.Key("train_class_counts");
  WriteCounts(r.train_class_counts, &json);
  json.Key("val_class_counts");
  WriteCounts(r.val_class_counts, &json);
  json.Key("chi_square").Number(r.chi_square);
  json.Key("degrees_of_freedom").Int(r.degrees_of_freedom);
  json.Key("p_value").Number(r.p_value);
  json.Key("gemm_flops").Int(r.gemm_flops);
  json.Key("candidates").Int(r.candidates);
  json.Key("transform_gemm_flops").Int(r.transform_gemm_flops);
  json.Key("transform_candidates").Int(r.transform_candidates);
  json.Key("transform_seconds").Number(r.transform_seconds);
  json.Key("seconds").Number(r.seconds);
  json.EndObject();
  return json.str() + "\n";
}

}  // namespace epochal::report
