#include "epochal/report/history_reader.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <cmath>
#include <limits>
#include <type_traits>
#include <variant>

#include "epochal/core/error.h"
#include "epochal/core/file_read.h"
#include "epochal/train/config.h"
#include "epochal/train/epoch_fields.h"

namespace epochal::report {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

const char* KindName(const Value& v) {
  switch (v.kind_case()) {
    case Value::kNullValue:
      return "null";
    case Value::kNumberValue:
      return "a number";
    case Value::kStringValue:
      return "a string";
    case Value::kBoolValue:
      return "a boolean";
    case Value::kStructValue:
      return "an object";
    case Value::kListValue:
      return "a list";
    case Value::KIND_NOT_SET:
      break;
  }
  return "empty";
}

// Reads values strictly: a key that is present must have the type its field needs, so a
// damaged or hand-edited history fails with the key named instead of being read as empty.
class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void Fail(const std::string& where, const std::string& what) const {
    throw InputError(path_ + ": " + where + " " + what);
  }

  const Value* Find(const Struct& s, const std::string& key) const {
    auto it = s.fields().find(key);
    return it == s.fields().end() ? nullptr : &it->second;
  }
  const Value& Get(const Struct& s, const std::string& key, const std::string& where) const {
    const Value* v = Find(s, key);
    if (v == nullptr) throw InputError(path_ + ": " + where + " has no \"" + key + "\"");
    return *v;
  }
  double CheckNumber(const Value& v, const std::string& where) const {
    if (v.kind_case() != Value::kNumberValue) {
      Fail(where, std::string("is ") + KindName(v) + ", not a number");
    }
    if (!std::isfinite(v.number_value())) Fail(where, "is not a finite number");
    return v.number_value();
  }
  double Number(const Struct& s, const std::string& key, const std::string& where) const {
    return CheckNumber(Get(s, key, where), where + "." + key);
  }
  // Absent or null: no value (history.json writes null for a value not known yet).
  std::optional<double> Optional(const Struct& s, const std::string& key,
                                 const std::string& where) const {
    const Value* v = Find(s, key);
    if (v == nullptr || v->kind_case() == Value::kNullValue) return std::nullopt;
    return CheckNumber(*v, where + "." + key);
  }
  const ListValue* List(const Struct& s, const std::string& key, const std::string& where) const {
    const Value* v = Find(s, key);
    if (v == nullptr || v->kind_case() == Value::kNullValue) return nullptr;
    if (v->kind_case() != Value::kListValue) {
      Fail(where + "." + key, std::string("is ") + KindName(*v) + ", not a list");
    }
    return &v->list_value();
  }
  std::vector<double> Numbers(const Struct& s, const std::string& key,
                              const std::string& where) const {
    std::vector<double> out;
    const ListValue* list = List(s, key, where);
    if (list == nullptr) return out;
    for (int i = 0; i < list->values_size(); ++i) {
      out.push_back(
          CheckNumber(list->values(i), where + "." + key + "[" + std::to_string(i) + "]"));
    }
    return out;
  }
  const Struct& Object(const Value& v, const std::string& where) const {
    if (v.kind_case() != Value::kStructValue) {
      Fail(where, std::string("is ") + KindName(v) + ", not an object");
    }
    return v.struct_value();
  }
  const std::string& String(const Value& v, const std::string& where) const {
    if (v.kind_case() != Value::kStringValue) {
      Fail(where, std::string("is ") + KindName(v) + ", not a string");
    }
    return v.string_value();
  }

 private:
  std::string path_;
};

// One record of history.json's "epochs" at `where`, or with `partial` its "partial_epoch",
// which was never validated (its val_loss and val_accuracy are null: NaN here).
train::EpochRecord ReadEpoch(const Reader& r, const Struct& e, const std::string& where,
                             bool partial = false) {
  train::EpochRecord rec;
  for (const train::EpochField& f : train::kEpochFields) {
    const std::string key(f.name);
    std::visit(
        [&](auto member) {
          auto& value = rec.*member;
          using T = std::decay_t<decltype(value)>;
          if constexpr (std::is_same_v<T, std::optional<double>>) {
            value = r.Optional(e, key, where);
          } else {
            const bool unvalidated = partial && (key == "val_loss" || key == "val_accuracy");
            const double x =
                f.required && !unvalidated
                    ? r.Number(e, key, where)
                    : r.Optional(e, key, where)
                          .value_or(unvalidated ? std::numeric_limits<double>::quiet_NaN()
                                                : f.missing);
            if constexpr (std::is_same_v<T, int>) {
              if (x < 1 || x > std::numeric_limits<int>::max() || x != std::floor(x)) {
                r.Fail(where + "." + key, "must be a positive integer");
              }
            }
            value = static_cast<T>(x);
          }
        },
        f.member);
  }
  rec.val_class_loss = r.Numbers(e, "val_class_loss", where);
  rec.val_class_accuracy = r.Numbers(e, "val_class_accuracy", where);
  rec.probe_class_loss = r.Numbers(e, "probe_class_loss", where);
  rec.probe_class_accuracy = r.Numbers(e, "probe_class_accuracy", where);
  if (const Value* v = r.Find(e, "dominant_term");
      v != nullptr && v->kind_case() != Value::kNullValue) {
    rec.dominant_term = r.String(*v, where + ".dominant_term");
  }
  if (const ListValue* findings = r.List(e, "findings", where)) {
    for (int k = 0; k < findings->values_size(); ++k) {
      rec.findings.push_back(
          r.String(findings->values(k), where + ".findings[" + std::to_string(k) + "]"));
    }
  }
  return rec;
}

}  // namespace

RunHistory ReadHistoryJson(const std::filesystem::path& path) {
  const std::string name = path.string();
  const std::string text = ReadFileCapped(path, kMaxHistoryFileBytes, "history");
  Struct root;
  const auto status = google::protobuf::util::JsonStringToMessage(text, &root);
  if (!status.ok()) throw InputError(name + ": not valid JSON: " + status.ToString());
  const Reader r(name);
  RunHistory run;
  train::History& h = run.history;

  if (const Value* config = r.Find(root, "config"); config != nullptr) {
    std::string config_json;
    google::protobuf::util::MessageToJsonString(r.Object(*config, "config"), &config_json);
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;
    const auto parsed =
        google::protobuf::util::JsonStringToMessage(config_json, &run.config, options);
    if (!parsed.ok()) {
      throw InputError(name +
                       ": config is not an epochal.v1.ExperimentConfig: " + parsed.ToString());
    }
    // The diagnosis is replayed with the config's thresholds: they must be valid.
    train::ValidateExperimentConfig(run.config, name + " (config)", nullptr);
    h.config_json = config_json;
  }
  if (auto ws = r.Optional(root, "world_size", "the top level")) {
    if (*ws < 1 || *ws > std::numeric_limits<int>::max() || *ws != std::floor(*ws)) {
      r.Fail("world_size", "must be a positive integer");
    }
    h.world_size = static_cast<int>(*ws);
  }
  if (const Value* p = r.Find(root, "precision"); p != nullptr) {
    const Struct& precision = r.Object(*p, "precision");
    h.precision = r.String(r.Get(precision, "used", "precision"), "precision.used");
    if (h.precision != "f32" && h.precision != "bf16") {
      r.Fail("precision.used", "must be \"f32\" or \"bf16\" (got \"" + h.precision + "\")");
    }
    if (const Value* why = r.Find(precision, "reason"); why != nullptr) {
      h.precision_reason = r.String(*why, "precision.reason");
    }
  }

  const Value& epochs_value = r.Get(root, "epochs", "the top level");
  if (epochs_value.kind_case() != Value::kListValue) {
    r.Fail("epochs", std::string("is ") + KindName(epochs_value) + ", not a list");
  }
  const ListValue& epochs = epochs_value.list_value();
  for (int i = 0; i < epochs.values_size(); ++i) {
    const std::string where = "epochs[" + std::to_string(i) + "]";
    h.epochs.push_back(ReadEpoch(r, r.Object(epochs.values(i), where), where));
  }
  if (const Value* partial = r.Find(root, "partial_epoch");
      partial != nullptr && partial->kind_case() != Value::kNullValue) {
    h.partial_epoch =
        ReadEpoch(r, r.Object(*partial, "partial_epoch"), "partial_epoch", /*partial=*/true);
  }
  if (const ListValue* absent = r.List(root, "absent_terms", "the top level")) {
    for (int k = 0; k < absent->values_size(); ++k) {
      h.absent_terms.push_back(
          r.String(absent->values(k), "absent_terms[" + std::to_string(k) + "]"));
    }
  }
  if (const ListValue* batches = r.List(root, "batches", "the top level")) {
    for (int i = 0; i < batches->values_size(); ++i) {
      const std::string where = "batches[" + std::to_string(i) + "]";
      const Struct& b = r.Object(batches->values(i), where);
      h.batches.push_back({r.Optional(b, "epoch_progress", where).value_or(0.0),
                           r.Optional(b, "loss", where).value_or(0.0),
                           r.Optional(b, "lr", where).value_or(0.0),
                           static_cast<int64_t>(r.Optional(b, "samples", where).value_or(0.0))});
    }
  }
  return run;
}

}  // namespace epochal::report
