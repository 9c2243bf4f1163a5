#include "epochal/train/checkpoint.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include "epochal/core/atomic_file.h"
#include "epochal/core/checksum.h"

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

bool IsNumbered(const fs::path& p) {
  const std::string name = p.filename().string();
  return name.size() == 22 && name.starts_with("ckpt-") && name.ends_with(".epck");
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

std::string CheckpointFileName(int64_t global_step, bool epoch_end) {
  char name[32];
  std::snprintf(name, sizeof name, "ckpt-%010lld-%c.epck", static_cast<long long>(global_step),
                epoch_end ? 'b' : 'a');
  return name;
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
  if (options_.keep_best && fs::exists(dir_ / "best.epck", ec)) {
    try {
      const v1::Checkpoint best = ReadCheckpointFile(dir_ / "best.epck");
      if (best.history().epochs_size() > 0) {
        best_val_loss_ = best.history().epochs(best.history().epochs_size() - 1).val_loss();
      }
    } catch (const CheckpointError&) {
      // A bad best.epck is replaced by the next epoch-end checkpoint.
    }
  }
}

std::vector<fs::path> CheckpointStore::List() const {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (IsNumbered(entry.path())) out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

fs::path CheckpointStore::Save(const v1::Checkpoint& checkpoint,
                               const std::function<void()>& after_partial_write) {
  const auto& pos = checkpoint.position();
  const bool epoch_end = pos.batches_done() == 0 && pos.epochs_completed() > 0;
  const fs::path path = dir_ / CheckpointFileName(pos.global_step(), epoch_end);
  const std::string bytes = EncodeCheckpoint(checkpoint);
  WriteFileAtomic(path, bytes, after_partial_write);
  if (options_.keep_best && epoch_end && checkpoint.history().epochs_size() > 0) {
    const double val_loss =
        checkpoint.history().epochs(checkpoint.history().epochs_size() - 1).val_loss();
    if (!best_val_loss_ || val_loss < *best_val_loss_) {
      WriteFileAtomic(dir_ / "best.epck", bytes);
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
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (IsNumbered(entry.path())) out.push_back(entry.path());
  }
  std::sort(out.rbegin(), out.rend());
  if (fs::exists(dir / "best.epck", ec)) out.push_back(dir / "best.epck");
  return out;
}

std::optional<FoundCheckpoint> FindLatestCheckpoint(
    const fs::path& dir, const std::function<void(const std::string&)>& warn) {
  for (const fs::path& path : CheckpointCandidates(dir)) {
    try {
      return FoundCheckpoint{path, ReadCheckpointFile(path)};
    } catch (const CheckpointError& e) {
      if (warn) warn(StrCat(e.what(), "; skipping it for an older checkpoint"));
    }
  }
  return std::nullopt;
}

}  // namespace epochal::train
