#include "epochal/report/history_reader.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <sstream>
#include <type_traits>
#include <variant>

#include "epochal/core/error.h"
#include "epochal/train/epoch_fields.h"

namespace epochal::report {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  const Value& Get(const Struct& s, const std::string& key, const std::string& where) const {
    auto it = s.fields().find(key);
    if (it == s.fields().end()) throw InputError(path_ + ": " + where + " has no \"" + key + "\"");
    return it->second;
  }
  double Number(const Struct& s, const std::string& key, const std::string& where) const {
    const Value& v = Get(s, key, where);
    if (v.kind_case() != Value::kNumberValue) {
      throw InputError(path_ + ": " + where + "." + key + " is not a number");
    }
    return v.number_value();
  }
  std::optional<double> Optional(const Struct& s, const std::string& key) const {
    auto it = s.fields().find(key);
    if (it == s.fields().end() || it->second.kind_case() != Value::kNumberValue) return {};
    return it->second.number_value();
  }
  std::vector<double> Numbers(const Struct& s, const std::string& key) const {
    std::vector<double> out;
    auto it = s.fields().find(key);
    if (it == s.fields().end() || it->second.kind_case() != Value::kListValue) return out;
    for (const Value& v : it->second.list_value().values()) out.push_back(v.number_value());
    return out;
  }

 private:
  std::string path_;
};

}  // namespace

RunHistory ReadHistoryJson(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::ifstream in(path);
  if (!in) throw InputError("cannot read " + name);
  std::ostringstream text;
  text << in.rdbuf();
  Struct root;
  const auto status = google::protobuf::util::JsonStringToMessage(text.str(), &root);
  if (!status.ok()) throw InputError(name + ": not valid JSON: " + status.ToString());
  const Reader r(name);
  RunHistory run;
  train::History& h = run.history;

  if (auto it = root.fields().find("config");
      it != root.fields().end() && it->second.kind_case() == Value::kStructValue) {
    std::string config_json;
    google::protobuf::util::MessageToJsonString(it->second.struct_value(), &config_json);
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;
    if (google::protobuf::util::JsonStringToMessage(config_json, &run.config, options).ok()) {
      h.config_json = config_json;
    }
  }
  if (auto ws = r.Optional(root, "world_size")) h.world_size = static_cast<int>(*ws);

  const Value& epochs = r.Get(root, "epochs", "the top level");
  for (int i = 0; i < epochs.list_value().values_size(); ++i) {
    const Struct& e = epochs.list_value().values(i).struct_value();
    const std::string where = "epochs[" + std::to_string(i) + "]";
    train::EpochRecord rec;
    for (const train::EpochField& f : train::kEpochFields) {
      const std::string key(f.name);
      std::visit(
          [&](auto member) {
            auto& value = rec.*member;
            using T = std::decay_t<decltype(value)>;
            if constexpr (std::is_same_v<T, std::optional<double>>) {
              value = r.Optional(e, key);
            } else {
              const double x =
                  f.required ? r.Number(e, key, where) : r.Optional(e, key).value_or(0);
              value = static_cast<T>(x);
            }
          },
          f.member);
    }
    rec.val_class_loss = r.Numbers(e, "val_class_loss");
    rec.val_class_accuracy = r.Numbers(e, "val_class_accuracy");
    rec.probe_class_loss = r.Numbers(e, "probe_class_loss");
    rec.probe_class_accuracy = r.Numbers(e, "probe_class_accuracy");
    if (auto it = e.fields().find("dominant_term"); it != e.fields().end()) {
      rec.dominant_term = it->second.string_value();
    }
    if (auto it = e.fields().find("findings"); it != e.fields().end()) {
      for (const Value& f : it->second.list_value().values())
        rec.findings.push_back(f.string_value());
    }
    h.epochs.push_back(std::move(rec));
  }
  if (auto it = root.fields().find("batches"); it != root.fields().end()) {
    for (const Value& v : it->second.list_value().values()) {
      const Struct& b = v.struct_value();
      h.batches.push_back({r.Optional(b, "epoch_progress").value_or(0.0),
                           r.Optional(b, "loss").value_or(0.0), r.Optional(b, "lr").value_or(0.0)});
    }
  }
  return run;
}

}  // namespace epochal::report
