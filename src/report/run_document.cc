#include "epochal/report/run_document.h"

#include <algorithm>
#include <ctime>
#include <limits>

#include "epochal/report/json_writer.h"

namespace epochal::report {
namespace {

std::string SampleBase64(const data::Dataset& ds, int64_t index) {
  if (index < 0 || index >= ds.size()) return {};
  const auto bytes = ds.Sample(index);
  return Base64(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

void WriteLeakage(const LeakageView& v, JsonWriter* json) {
  json->BeginObject()
      .Key("exact")
      .Int(v.exact)
      .Key("near")
      .Int(v.near)
      .Key("photometric")
      .Int(v.photometric)
      .Key("shifted")
      .Int(v.shifted)
      .Key("mirrored")
      .Int(v.mirrored)
      .Key("label_conflicts")
      .Int(v.label_conflicts)
      .Key("pair_count")
      .Int(v.pair_count)
      .Key("val_samples")
      .Int(v.val_samples)
      .Key("train_samples")
      .Int(v.train_samples)
      .Key("near_rmse")
      .Number(v.near_rmse);
  json->Key("image")
      .BeginObject()
      .Key("channels")
      .Int(v.channels)
      .Key("height")
      .Int(v.height)
      .Key("width")
      .Int(v.width)
      .EndObject();
  json->Key("pairs").BeginArray();
  for (const LeakageView::Pair& p : v.pairs) {
    json->BeginObject()
        .Key("train_index")
        .Int(p.train_index)
        .Key("val_index")
        .Int(p.val_index)
        .Key("rmse")
        .Number(p.rmse)
        .Key("kind")
        .String(p.kind)
        .Key("label_conflict")
        .Bool(p.label_conflict);
    if (!p.train_image.empty()) json->Key("train_image").String(p.train_image);
    if (!p.val_image.empty()) json->Key("val_image").String(p.val_image);
    json->EndObject();
  }
  json->EndArray().EndObject();
}

}  // namespace

std::string Base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                       static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                       static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 2]));
    out.push_back(kAlphabet[v >> 18]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out.push_back(kAlphabet[v >> 18]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string UtcTimestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

LeakageView MakeLeakageView(const data::LeakageReport& report, const data::Dataset* train,
                            const data::Dataset* val) {
  LeakageView v;
  v.exact = report.exact;
  v.near = report.near;
  v.photometric = report.photometric;
  v.shifted = report.shifted;
  v.mirrored = report.mirrored;
  v.label_conflicts = report.label_conflicts;
  v.pair_count = report.pair_count;
  v.val_samples = report.val_scanned;
  v.train_samples = report.train_samples;
  v.near_rmse = report.near_rmse;
  const bool images = train != nullptr && val != nullptr;
  if (images) {
    v.channels = val->channels;
    v.height = val->height;
    v.width = val->width;
  }
  const size_t n = std::min(report.pairs.size(), kMaxLeakageImagePairs);
  for (size_t i = 0; i < n; ++i) {
    const data::LeakagePair& p = report.pairs[i];
    LeakageView::Pair q;
    q.train_index = p.train_index;
    q.val_index = p.val_index;
    q.rmse = p.rmse;
    q.kind = data::LeakageKindName(p.kind);
    q.label_conflict = p.label_conflict;
    if (images) {
      q.train_image = SampleBase64(*train, p.train_index);
      q.val_image = SampleBase64(*val, p.val_index);
    }
    v.pairs.push_back(std::move(q));
  }
  return v;
}

std::vector<RankThroughput> ThroughputFromEpoch(const train::EpochRecord& record,
                                                double per_rank_batch) {
  std::vector<RankThroughput> out;
  for (size_t r = 0; r < record.rank_timings.size(); ++r) {
    const auto& t = record.rank_timings[r];
    RankThroughput x;
    x.rank = static_cast<int>(r);
    x.step_ms = t.step_ms;
    x.data_ms = t.data_ms;
    x.allreduce_wait_ms = t.allreduce_wait_ms;
    x.images_per_second = t.step_ms > 0 ? per_rank_batch * 1000.0 / t.step_ms : 0.0;
    out.push_back(x);
  }
  if (out.empty() && record.images_per_second > 0) {
    // One rank: the epoch's own figure is that rank's.
    RankThroughput x;
    x.images_per_second = record.images_per_second;
    x.step_ms = per_rank_batch * 1000.0 / record.images_per_second;
    // Not measured per rank for one rank: null in the document.
    x.data_ms = x.allreduce_wait_ms = std::numeric_limits<double>::quiet_NaN();
    out.push_back(x);
  }
  return out;
}

std::string RunDocumentJson(const RunDocument& doc) {
  JsonWriter json;
  json.BeginObject();
  json.Key("format").String("epochal.run.v1");
  json.Key("run").String(doc.run);
  json.Key("config_name").String(doc.config_name);
  json.Key("state").String(doc.state);
  json.Key("world_size").Int(doc.world_size);
  json.Key("epochs_planned").Int(doc.epochs_planned);
  json.Key("generated_at").String(doc.generated_at);
  json.Key("progress");
  if (doc.progress) {
    const RunProgress& p = *doc.progress;
    json.BeginObject()
        .Key("epoch")
        .Int(p.epoch)
        .Key("epoch_progress")
        .Number(p.epoch_progress)
        .Key("global_step")
        .Int(p.global_step)
        .Key("running_loss")
        .Number(p.running_loss)
        .Key("running_accuracy")
        .Number(p.running_accuracy)
        .Key("lr")
        .Number(p.lr)
        .EndObject();
  } else {
    json.Null();
  }
  json.Key("epochs").Raw(doc.epochs_json.empty() ? "[]" : doc.epochs_json);
  json.Key("partial_epoch").Raw(doc.partial_epoch_json.empty() ? "null" : doc.partial_epoch_json);
  json.Key("absent_terms").BeginArray();
  for (const std::string& t : doc.absent_terms) json.String(t);
  json.EndArray();
  json.Key("batches_offset").Int(doc.batches_offset);
  json.Key("batches").BeginArray();
  for (const train::BatchRecord& b : doc.batches) {
    json.BeginObject()
        .Key("epoch_progress")
        .Number(b.epoch_progress)
        .Key("loss")
        .Number(b.loss)
        .Key("lr")
        .Number(b.lr)
        .Key("samples")
        .Int(b.samples)
        .EndObject();
  }
  json.EndArray();
  json.Key("findings").BeginArray();
  for (const train::Finding& f : doc.findings) {
    json.BeginObject()
        .Key("name")
        .String(f.name)
        .Key("first_epoch")
        .Int(f.first_epoch)
        .Key("last_epoch")
        .Int(f.last_epoch)
        .Key("explanation")
        .String(f.explanation)
        .EndObject();
  }
  json.EndArray();
  json.Key("leakage");
  if (doc.leakage) {
    WriteLeakage(*doc.leakage, &json);
  } else {
    json.Null();
  }
  json.Key("ranks").BeginArray();
  for (const RankThroughput& r : doc.ranks) {
    json.BeginObject()
        .Key("rank")
        .Int(r.rank)
        .Key("images_per_second")
        .Number(r.images_per_second)
        .Key("step_ms")
        .Number(r.step_ms)
        .Key("data_ms")
        .Number(r.data_ms)
        .Key("allreduce_wait_ms")
        .Number(r.allreduce_wait_ms)
        .EndObject();
  }
  json.EndArray();
  json.Key("config");
  if (doc.config_json.find_first_not_of(" \t\r\n") == std::string::npos) {
    json.BeginObject().EndObject();
  } else {
    json.Raw(doc.config_json);
  }
  if (!doc.config_text.empty()) json.Key("config_text").String(doc.config_text);
  if (!doc.classification_report.empty()) {
    json.Key("classification_report").String(doc.classification_report);
  }
  json.EndObject();
  return json.str();
}

}  // namespace epochal::report
