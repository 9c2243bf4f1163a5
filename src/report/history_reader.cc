#include "epochal/report/history_reader.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <sstream>

#include "epochal/core/error.h"

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
    rec.epoch = static_cast<int>(r.Number(e, "epoch", where));
    rec.loss = r.Number(e, "loss", where);
    rec.accuracy = r.Number(e, "accuracy", where);
    rec.val_loss = r.Number(e, "val_loss", where);
    rec.val_accuracy = r.Number(e, "val_accuracy", where);
    rec.seconds = r.Optional(e, "seconds").value_or(0.0);
    rec.images_per_second = r.Optional(e, "images_per_second").value_or(0.0);
    rec.lr = r.Optional(e, "lr").value_or(0.0);
    rec.probe_train_loss = r.Optional(e, "probe_train_loss");
    rec.probe_eval_loss = r.Optional(e, "probe_eval_loss");
    rec.gap_timing = r.Optional(e, "gap_timing");
    rec.gap_regularization = r.Optional(e, "gap_regularization");
    rec.gap_data = r.Optional(e, "gap_data");
    rec.aligned_train_loss = r.Optional(e, "aligned_train_loss");
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
