#include "html_report_command.h"

#include <cstdint>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "epochal/core/atomic_file.h"
#include "epochal/core/error.h"
#include "epochal/data/idx.h"
#include "epochal/report/history_writer.h"
#include "epochal/report/html_report.h"
#include "epochal/report/run_document.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;

// The largest run file report.html reads (leakage.json with 100,000 pairs is ~5 MB).
constexpr uintmax_t kMaxRunFileBytes = 64u << 20;

// The file's text, or nothing when it does not exist.
std::optional<std::string> ReadRunFile(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) throw InputError(path.string() + ": cannot be read: " + ec.message());
  if (size > kMaxRunFileBytes) {
    throw InputError(path.string() + ": " + std::to_string(size) + " bytes, more than the " +
                     std::to_string(kMaxRunFileBytes) + " a run file may have");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

int64_t Int(const google::protobuf::Struct& s, const char* key) {
  const auto it = s.fields().find(key);
  return it == s.fields().end() ? 0 : static_cast<int64_t>(it->second.number_value());
}

// leakage.json back into a report (counts and the first pairs).
data::LeakageReport ReadLeakageJson(const fs::path& path, const std::string& text) {
  google::protobuf::Struct root;
  if (!google::protobuf::util::JsonStringToMessage(text, &root).ok()) {
    throw InputError(path.string() + ": not valid JSON");
  }
  data::LeakageReport r;
  r.exact = Int(root, "exact");
  r.near = Int(root, "near");
  r.photometric = Int(root, "photometric");
  r.shifted = Int(root, "shifted");
  r.mirrored = Int(root, "mirrored");
  r.label_conflicts = Int(root, "label_conflicts");
  r.pair_count = Int(root, "pair_count");
  r.val_scanned = Int(root, "val_samples");
  r.train_samples = Int(root, "train_samples");
  const auto rmse = root.fields().find("near_rmse");
  if (rmse != root.fields().end()) r.near_rmse = rmse->second.number_value();
  const auto pairs = root.fields().find("pairs");
  if (pairs == root.fields().end()) return r;
  for (const auto& v : pairs->second.list_value().values()) {
    if (r.pairs.size() >= report::kMaxLeakageImagePairs) break;
    const auto& cols = v.list_value().values();
    // 4 columns before the transformed kinds, 10 since (see pairs_columns).
    if (cols.size() != 4 && cols.size() != 10) {
      throw InputError(path.string() + ": pairs: expected 4 or 10 columns");
    }
    data::LeakagePair p{static_cast<int64_t>(cols[0].number_value()),
                        static_cast<int64_t>(cols[1].number_value()), cols[2].number_value(),
                        cols[3].bool_value()};
    if (cols.size() == 10) {
      if (!data::ParseLeakageKind(cols[4].string_value(), &p.kind)) {
        throw InputError(path.string() + ": pairs: unknown kind \"" + cols[4].string_value() +
                         "\"");
      }
      p.mirrored = cols[5].bool_value();
      p.dx = static_cast<int>(cols[6].number_value());
      p.dy = static_cast<int>(cols[7].number_value());
      p.gain = cols[8].number_value();
      p.offset = cols[9].number_value();
    } else if (p.rmse > 0) {
      p.kind = data::LeakageKind::kNear;
    }
    r.pairs.push_back(p);
  }
  return r;
}

// The scanned split, or nothing when its files are not at hand (another machine).
std::optional<data::Dataset> TryLoadSplit(const v1::ExperimentConfig& config, bool train) {
  const auto& d = config.data();
  const std::string images = (fs::path(d.data_dir()) / (train ? d.train_images() : d.val_images()));
  const std::string labels = (fs::path(d.data_dir()) / (train ? d.train_labels() : d.val_labels()));
  if (d.data_dir().empty() || !fs::exists(images) || !fs::exists(labels)) return std::nullopt;
  try {
    return data::LoadIdxDataset(images, labels, config.model().num_classes(),
                                train ? d.limit_train() : d.limit_val());
  } catch (const InputError& e) {
    std::cerr << "epochal report: leakage images left out: " << e.what() << "\n";
    return std::nullopt;
  }
}

}  // namespace

fs::path WriteHtmlReport(const fs::path& dir, const report::RunHistory& run,
                         const std::vector<train::Finding>& findings) {
  const train::History& h = run.history;
  const v1::ExperimentConfig& config = run.config;
  report::RunDocument doc;
  doc.run = fs::absolute(dir).lexically_normal().filename().string();
  if (doc.run.empty()) doc.run = fs::absolute(dir).lexically_normal().parent_path().filename();
  doc.config_name = config.name();
  doc.world_size = h.world_size;
  doc.epochs_planned = config.training().epochs();
  bool stopped = false;
  for (const auto& c : h.control_events) stopped = stopped || c.action == "stop";
  const bool complete =
      !h.epochs.empty() && h.epochs.back().epoch >= doc.epochs_planned && !stopped;
  doc.state = complete ? "finished" : "stopped";
  doc.epochs_json = report::EpochsJson(h);
  doc.partial_epoch_json = report::PartialEpochJson(h);
  doc.absent_terms = h.absent_terms;
  doc.config_json = h.config_json;
  doc.batches = h.batches;
  doc.findings = findings;
  doc.generated_at = report::UtcTimestamp();
  if (auto text = ReadRunFile(dir / "config.textproto")) doc.config_text = *text;
  if (auto text = ReadRunFile(dir / "report.txt")) doc.classification_report = *text;
  if (auto text = ReadRunFile(dir / "leakage.json")) {
    const data::LeakageReport leak = ReadLeakageJson(dir / "leakage.json", *text);
    std::optional<data::Dataset> train_set, val_set;
    if (!leak.pairs.empty()) {
      train_set = TryLoadSplit(config, true);
      if (train_set) val_set = TryLoadSplit(config, false);
    }
    const bool images = train_set && val_set;
    doc.leakage =
        report::MakeLeakageView(leak, images ? &*train_set : nullptr, images ? &*val_set : nullptr);
  }
  if (!h.epochs.empty()) {
    const auto& t = config.training();
    const double per_rank = t.fixed_global_batch()
                                ? static_cast<double>(t.batch_size()) / std::max(h.world_size, 1)
                                : static_cast<double>(t.batch_size());
    doc.ranks = report::ThroughputFromEpoch(h.epochs.back(), per_rank);
  }
  const std::string title =
      "epochal report: " + doc.run + (doc.config_name.empty() ? "" : " (" + doc.config_name + ")");
  const fs::path path = dir / "report.html";
  WriteFileAtomic(path, report::HtmlReport(report::RunDocumentJson(doc), title));
  return path;
}

}  // namespace epochal::apps
