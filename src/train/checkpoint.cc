#include "epochal/train/checkpoint.h"

#include <google/protobuf/util/message_differencer.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <system_error>

#include "epochal/core/atomic_file.h"
#include "epochal/core/checksum.h"
#include "epochal/core/file_read.h"

namespace epochal::train {
namespace {

namespace fs = std::filesystem;
using detail::StrCat;

void PutLe(std::string* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xffu));
}

uint64_t GetLe(std::string_view in, size_t offset, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(in[offset + static_cast<size_t>(i)]))
         << (8 * i);
  }
  return v;
}

void AddTensors(Sha256& sha, const google::protobuf::RepeatedPtrField<v1::NamedTensor>& tensors) {
  for (const v1::NamedTensor& t : tensors) {
    sha.Update(t.name());
    sha.Update("\0", 1);
    for (const int64_t d : t.dims()) sha.Update(&d, sizeof d);
    sha.Update(t.values().data(), static_cast<size_t>(t.values_size()) * sizeof(float));
  }
}

bool IsRunId(std::string_view id) {
  if (id.empty() || id.size() > 32) return false;
  return std::all_of(id.begin(), id.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'); });
}

bool IsDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The numbered checkpoints of `dir` with their names, any run.
std::vector<std::pair<fs::path, CheckpointName>> Numbered(const fs::path& dir) {
  std::vector<std::pair<fs::path, CheckpointName>> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto name = ParseCheckpointName(entry.path().filename().string());
    if (name && !name->best) out.emplace_back(entry.path(), *name);
  }
  return out;
}

bool Older(const CheckpointName& a, const CheckpointName& b) {
  return std::pair(a.global_step, a.epoch_end) < std::pair(b.global_step, b.epoch_end);
}

// Why `path`, just written from `bytes`, does not hold them; "" when it does.
std::string ReadBackMismatch(const fs::path& path, const std::string& bytes) {
  std::string back;
  try {
    back = ReadFileCapped(path, bytes.size() + 1, "checkpoint");
  } catch (const InputError& e) {
    return e.what();
  }
  if (back.size() != bytes.size()) {
    return StrCat("it holds ", back.size(), " bytes, ", bytes.size(), " were written");
  }
  const auto at = std::mismatch(back.begin(), back.end(), bytes.begin()).first;
  if (at == back.end()) return "";
  return StrCat("byte ", at - back.begin(), " differs from what was written");
}

}  // namespace

std::string EncodeCheckpoint(const v1::Checkpoint& checkpoint) {
  std::string payload;
  if (!checkpoint.SerializeToString(&payload)) throw Error("cannot serialize a checkpoint");
  std::string out(kCheckpointMagic, sizeof kCheckpointMagic);
  PutLe(&out, kCheckpointVersion, 4);
  PutLe(&out, 0, 4);
  PutLe(&out, payload.size(), 8);
  PutLe(&out, Crc32c(payload), 4);
  PutLe(&out, Crc32c(out), 4);
  out += payload;
  return out;
}

v1::Checkpoint DecodeCheckpoint(std::string_view bytes, const std::string& name) {
  const auto bad = [&name](const std::string& why) {
    return CheckpointError(StrCat(name, ": not a good checkpoint: ", why));
  };
  if (bytes.size() < kCheckpointHeaderBytes) {
    throw bad(StrCat("truncated (", bytes.size(), " bytes, the header alone has ",
                     kCheckpointHeaderBytes, ")"));
  }
  if (std::memcmp(bytes.data(), kCheckpointMagic, sizeof kCheckpointMagic) != 0) {
    throw bad("wrong magic (an epochal checkpoint starts with \"EPOCHCKP\")");
  }
  const auto header_crc = static_cast<uint32_t>(GetLe(bytes, 28, 4));
  if (Crc32c(bytes.substr(0, 28)) != header_crc) throw bad("header checksum mismatch");
  const auto version = static_cast<uint32_t>(GetLe(bytes, 8, 4));
  if (version != kCheckpointVersion) {
    throw bad(
        StrCat("format version ", version, ", this build reads version ", kCheckpointVersion));
  }
  if (GetLe(bytes, 12, 4) != 0) throw bad("reserved header field is not zero");
  const uint64_t length = GetLe(bytes, 16, 8);
  if (length > kCheckpointMaxPayload) throw bad(StrCat("implausible payload length ", length));
  const uint64_t have = bytes.size() - kCheckpointHeaderBytes;
  if (have != length) {
    throw bad(have < length ? StrCat("truncated: payload has ", have, " of ", length, " bytes")
                            : StrCat(have - length, " bytes after the payload"));
  }
  const std::string_view payload = bytes.substr(kCheckpointHeaderBytes);
  if (Crc32c(payload) != static_cast<uint32_t>(GetLe(bytes, 24, 4))) {
    throw bad("payload checksum (CRC32C) mismatch");
  }
  v1::Checkpoint checkpoint;
  if (!checkpoint.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    throw bad("payload is not an epochal.v1.Checkpoint message");
  }
  return checkpoint;
}

v1::Checkpoint ReadCheckpointFile(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw CheckpointError(path.string() + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw CheckpointError(StrCat(
        path.string(), ": cannot read checkpoint: ", std::generic_category().message(errno)));
  }
  // The header says how long the file must be, so nothing is read past that (plus a
  // little, to report trailing bytes): `/dev/zero` or a wrong multi-gigabyte file fails
  // after its first 32 bytes rather than being read whole.
  constexpr uint64_t kTrailingBytesReported = 1 << 16;
  std::string bytes(kCheckpointHeaderBytes, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<size_t>(in.gcount()));
  uint64_t want = kCheckpointHeaderBytes;
  if (bytes.size() == kCheckpointHeaderBytes &&
      std::memcmp(bytes.data(), kCheckpointMagic, sizeof kCheckpointMagic) == 0 &&
      Crc32c(std::string_view(bytes).substr(0, 28)) == static_cast<uint32_t>(GetLe(bytes, 28, 4))) {
    const uint64_t length = GetLe(bytes, 16, 8);
    if (length <= kCheckpointMaxPayload) want += length + kTrailingBytesReported;
  }
  // Whatever is wrong with a header that does not check out, DecodeCheckpoint names it.
  char buffer[1 << 16];
  while (bytes.size() < want && in) {
    const uint64_t chunk = std::min<uint64_t>(sizeof buffer, want - bytes.size());
    in.read(buffer, static_cast<std::streamsize>(chunk));
    bytes.append(buffer, static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) {
    throw CheckpointError(StrCat(path.string(), ": cannot read checkpoint: read error"));
  }
  return DecodeCheckpoint(bytes, path.string());
}

std::string StateDigest(const v1::Checkpoint& checkpoint) {
  Sha256 sha;
  AddTensors(sha, checkpoint.weights().tensors());
  for (const v1::RankState& r : checkpoint.rank_state()) AddTensors(sha, r.tensors());
  AddTensors(sha, checkpoint.optimizer().velocity());
  const int64_t iterations = checkpoint.optimizer().iterations();
  sha.Update(&iterations, sizeof iterations);
  if (checkpoint.optimizer().has_learning_rate_override()) {
    const double lr = checkpoint.optimizer().learning_rate_override();
    sha.Update(&lr, sizeof lr);
  }
  return sha.HexDigest();
}

void CheckResumeCompatible(const v1::ExperimentConfig& saved, const v1::ExperimentConfig& current,
                           const std::string& source) {
  v1::ExperimentConfig a = saved, b = current;
  for (v1::ExperimentConfig* c : {&a, &b}) {
    c->mutable_training()->clear_epochs();
    c->mutable_data()->clear_data_dir();
    c->mutable_analysis()->clear_no_scan();
    c->clear_checkpoint();
  }
  google::protobuf::util::MessageDifferencer differ;
  std::string report;
  differ.ReportDifferencesToString(&report);
  if (differ.Compare(a, b)) return;
  std::string first = report.substr(0, report.find('\n'));
  throw InputError(StrCat(source, ": the checkpoint was written with a different config (", first,
                          "); an exact continuation needs the same config, where only "
                          "training.epochs may change"));
}

std::string NewRunId() {
  std::random_device device;
  const auto now = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch() /
                                         std::chrono::nanoseconds(1));
  std::seed_seq seq{static_cast<uint32_t>(now), static_cast<uint32_t>(now >> 32),
                    static_cast<uint32_t>(::getpid()), device(), device()};
  std::mt19937 gen(seq);
  char id[16];
  std::snprintf(id, sizeof id, "%08x", static_cast<unsigned>(gen()));
  return id;
}

std::optional<CheckpointName> ParseCheckpointName(const std::string& file_name) {
  std::string_view n(file_name);
  if (!n.ends_with(".epck")) return std::nullopt;
  n.remove_suffix(5);
  CheckpointName out;
  if (n == "best") {
    out.best = true;
    return out;
  }
  if (n.starts_with("best-")) {
    if (!IsRunId(n.substr(5))) return std::nullopt;
    out.best = true;
    out.run_id = std::string(n.substr(5));
    return out;
  }
  // ckpt-[<run id>-]<10 digits>-<a|b>
  if (!n.starts_with("ckpt-") || n.size() < 5 + 10 + 2) return std::nullopt;
  const char phase = n.back();
  if ((phase != 'a' && phase != 'b') || n[n.size() - 2] != '-') return std::nullopt;
  n.remove_suffix(2);
  const std::string_view step = n.substr(n.size() - 10);
  if (!IsDigits(step)) return std::nullopt;
  n.remove_suffix(10);
  n.remove_prefix(5);
  if (!n.empty()) {
    if (!n.ends_with('-') || !IsRunId(n.substr(0, n.size() - 1))) return std::nullopt;
    out.run_id = std::string(n.substr(0, n.size() - 1));
  }
  out.global_step = std::stoll(std::string(step));
  out.epoch_end = phase == 'b';
  return out;
}

std::string CheckpointFileName(int64_t global_step, bool epoch_end, const std::string& run_id) {
  char step[32];
  std::snprintf(step, sizeof step, "%010lld-%c.epck", static_cast<long long>(global_step),
                epoch_end ? 'b' : 'a');
  return run_id.empty() ? StrCat("ckpt-", step) : StrCat("ckpt-", run_id, "-", step);
}

std::string BestCheckpointFileName(const std::string& run_id) {
  return run_id.empty() ? "best.epck" : StrCat("best-", run_id, ".epck");
}

CheckpointStore::CheckpointStore(fs::path dir, CheckpointStoreOptions options)
    : dir_(std::move(dir)), options_(options) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) {
    throw InputError(
        StrCat("cannot create checkpoint directory ", dir_.string(), ": ", ec.message()));
  }
  if (::access(dir_.c_str(), W_OK | X_OK) != 0) {
    throw InputError(StrCat("cannot write checkpoints to ", dir_.string(), ": ",
                            std::generic_category().message(errno)));
  }
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (entry.path().filename().string().find(".tmp.") != std::string::npos) {
      fs::remove(entry.path(), ec);
    }
  }
  if (!options_.run_id.empty() && !IsRunId(options_.run_id)) {
    throw Error(StrCat("checkpoint store: bad run id '", options_.run_id, "'"));
  }
  const fs::path best_path = dir_ / BestCheckpointFileName(options_.run_id);
  if (options_.keep_best && fs::exists(best_path, ec)) {
    try {
      const v1::Checkpoint best = ReadCheckpointFile(best_path);
      if (best.history().epochs_size() > 0) {
        best_val_loss_ = best.history().epochs(best.history().epochs_size() - 1).val_loss();
      }
    } catch (const CheckpointError&) {
      // A bad best checkpoint is replaced by the next epoch-end checkpoint.
    }
  }
}

std::vector<fs::path> CheckpointStore::List() const {
  auto mine = Numbered(dir_);
  std::erase_if(mine, [this](const auto& e) { return e.second.run_id != options_.run_id; });
  std::sort(mine.begin(), mine.end(),
            [](const auto& a, const auto& b) { return Older(a.second, b.second); });
  std::vector<fs::path> out;
  for (auto& e : mine) out.push_back(std::move(e.first));
  return out;
}

fs::path CheckpointStore::Save(const v1::Checkpoint& checkpoint,
                               const std::function<void()>& after_partial_write,
                               const std::function<void(const fs::path&)>& after_write) {
  EPOCHAL_CHECK(checkpoint.run_id() == options_.run_id, "checkpoint of run '", checkpoint.run_id(),
                "' given to the store of run '", options_.run_id, "'");
  const auto& pos = checkpoint.position();
  const bool epoch_end = pos.batches_done() == 0 && pos.epochs_completed() > 0;
  const fs::path path = dir_ / CheckpointFileName(pos.global_step(), epoch_end, options_.run_id);
  const std::string bytes = EncodeCheckpoint(checkpoint);
  // Protobuf's serializer logs a string field that is not UTF-8 and writes it anyway; the
  // parser then refuses the message. Decoding first means such a file never replaces or
  // rotates anything.
  try {
    DecodeCheckpoint(bytes, path.string());
  } catch (const CheckpointError& e) {
    throw Error(StrCat("refusing to write checkpoint ", path.string(), ": it would not read back (",
                       e.what(),
                       "; a string field that is not valid UTF-8 does this, and protobuf's log "
                       "above names it); the checkpoints already in ",
                       dir_.string(), " are intact"));
  }
  const auto write_verified = [&](const fs::path& target, bool with_hooks) {
    WriteFileAtomic(target, bytes, with_hooks ? after_partial_write : std::function<void()>());
    if (with_hooks && after_write) after_write(target);
    const std::string mismatch = ReadBackMismatch(target, bytes);
    if (mismatch.empty()) return;
    std::error_code ec;
    fs::remove(target, ec);
    throw SystemError(StrCat("checkpoint ", target.string(),
                             " does not read back after writing: ", mismatch, "; removed it"));
  };
  write_verified(path, true);
  if (options_.keep_best && epoch_end && checkpoint.history().epochs_size() > 0) {
    const double val_loss =
        checkpoint.history().epochs(checkpoint.history().epochs_size() - 1).val_loss();
    if (!best_val_loss_ || val_loss < *best_val_loss_) {
      write_verified(dir_ / BestCheckpointFileName(options_.run_id), false);
      best_val_loss_ = val_loss;
    }
  }
  std::vector<fs::path> all = List();
  const auto keep = static_cast<size_t>(std::max(1, options_.keep_last));
  for (size_t i = 0; i + keep < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i], ec);
  }
  return path;
}

std::vector<fs::path> CheckpointCandidates(const fs::path& dir) {
  struct Run {
    std::vector<std::pair<fs::path, CheckpointName>> numbered;
    std::optional<fs::path> best;
    fs::file_time_type newest = fs::file_time_type::min();
  };
  std::map<std::string, Run> runs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto name = ParseCheckpointName(entry.path().filename().string());
    if (!name) continue;
    Run& run = runs[name->run_id];
    if (name->best) {
      run.best = entry.path();
    } else {
      run.numbered.emplace_back(entry.path(), *name);
    }
    std::error_code time_ec;
    const auto written = fs::last_write_time(entry.path(), time_ec);
    if (!time_ec) run.newest = std::max(run.newest, written);
  }
  std::vector<Run*> order;
  for (auto& [id, run] : runs) order.push_back(&run);
  std::stable_sort(order.begin(), order.end(),
                   [](const Run* a, const Run* b) { return a->newest > b->newest; });
  std::vector<fs::path> out;
  for (Run* run : order) {
    std::sort(run->numbered.begin(), run->numbered.end(),
              [](const auto& a, const auto& b) { return Older(b.second, a.second); });
    for (auto& e : run->numbered) out.push_back(std::move(e.first));
    if (run->best) out.push_back(std::move(*run->best));
  }
  return out;
}

CheckpointSearch SearchCheckpoints(const fs::path& dir, const CheckpointFilter& accept) {
  CheckpointSearch search;
  const std::vector<fs::path> candidates = CheckpointCandidates(dir);
  search.candidates = candidates.size();
  std::map<std::string, std::string> refused_runs;  // Run id -> why.
  for (const fs::path& path : candidates) {
    const auto name = ParseCheckpointName(path.filename().string());
    const std::string run_id = name ? name->run_id : std::string();
    if (auto it = refused_runs.find(run_id); it != refused_runs.end()) {
      search.skipped.push_back({path, "same run as the one above: " + it->second});
      continue;
    }
    v1::Checkpoint checkpoint;
    try {
      checkpoint = ReadCheckpointFile(path);
    } catch (const CheckpointError& e) {
      // The reason without the path the message starts with.
      std::string why = e.what();
      if (const std::string prefix = path.string() + ": "; why.starts_with(prefix)) {
        why.erase(0, prefix.size());
      }
      search.skipped.push_back({path, why});
      continue;
    }
    const std::string why = accept ? accept(path, checkpoint) : std::string();
    if (why.empty()) {
      search.found = FoundCheckpoint{path, std::move(checkpoint)};
      return search;
    }
    search.skipped.push_back({path, why});
    refused_runs[run_id] = why;
  }
  return search;
}

std::optional<FoundCheckpoint> FindLatestCheckpoint(
    const fs::path& dir, const std::function<void(const std::string&)>& warn) {
  CheckpointSearch search = SearchCheckpoints(dir);
  if (warn) {
    for (const SkippedCheckpoint& s : search.skipped) {
      warn(StrCat(s.path.string(), ": ", s.reason, "; skipping it for an older checkpoint"));
    }
  }
  return std::move(search.found);
}

}  // namespace epochal::train
