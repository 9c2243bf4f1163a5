// The scalar fields of an EpochRecord, listed once.
//
// history.json and history.csv (report/history_writer), their reader
// (report/history_reader), the checkpoint's EpochRecordProto (train/training_state) and
// the control plane's v1::EpochRecord (control/control_state) all walk kEpochFields, so a
// new scalar is added here and in the structs and messages that carry it, and nowhere
// else. A field's name is its key in history.json and history.csv and its field name in
// both proto messages; the control message carries only some of the fields.
//
// What is not a scalar (findings, the per-class vectors, the rank timings, the replica
// hashes, the dominant term) each writer handles itself: their shapes differ per format.
// Thread safety: constants and reentrant functions.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <optional>
#include <string_view>
#include <variant>

#include "epochal/train/history.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace epochal::train {

struct EpochField {
  using Member =
      std::variant<int EpochRecord::*, double EpochRecord::*, std::optional<double> EpochRecord::*>;
  // Key in history.json and history.csv; field name in EpochRecordProto and v1::EpochRecord.
  std::string_view name;
  Member member;
  // A column of history.csv (in this order, before "findings"); in history.json the
  // columns come first, the others after "findings" and "dominant_term".
  bool column;
  // history.json must hold it as a number; another field missing there (or unset in a
  // message with presence) reads as `missing` (a double) or absent (an optional).
  bool required;
  double missing = 0.0;
};

// In history.json / history.csv order.
inline constexpr std::array<EpochField, 25> kEpochFields = {{
    {"epoch", &EpochRecord::epoch, true, true},
    {"loss", &EpochRecord::loss, true, true},
    {"accuracy", &EpochRecord::accuracy, true, true},
    {"val_loss", &EpochRecord::val_loss, true, true},
    {"val_accuracy", &EpochRecord::val_accuracy, true, true},
    {"probe_train_loss", &EpochRecord::probe_train_loss, true, false},
    {"probe_nodrop_loss", &EpochRecord::probe_nodrop_loss, true, false},
    {"probe_eval_loss", &EpochRecord::probe_eval_loss, true, false},
    {"gap_timing", &EpochRecord::gap_timing, true, false},
    {"gap_dropout", &EpochRecord::gap_dropout, true, false},
    {"gap_batchnorm", &EpochRecord::gap_batchnorm, true, false},
    {"gap_data", &EpochRecord::gap_data, true, false},
    {"gap_regularization", &EpochRecord::gap_regularization, true, false},
    {"gap_timing_se", &EpochRecord::gap_timing_se, true, false},
    {"gap_dropout_se", &EpochRecord::gap_dropout_se, true, false},
    {"gap_batchnorm_se", &EpochRecord::gap_batchnorm_se, true, false},
    {"gap_data_se", &EpochRecord::gap_data_se, true, false},
    {"gap_regularization_se", &EpochRecord::gap_regularization_se, true, false},
    {"aligned_train_loss", &EpochRecord::aligned_train_loss, true, false},
    {"seconds", &EpochRecord::seconds, true, false},
    {"images_per_second", &EpochRecord::images_per_second, true, false},
    {"lr", &EpochRecord::lr, true, false},
    // 1 for a complete epoch; histories and checkpoints from before it read as complete.
    {"epoch_fraction", &EpochRecord::epoch_fraction, true, false, 1.0},
    // Timings of the coordinator's work after the epoch (not in `seconds`).
    {"validation_seconds", &EpochRecord::validation_seconds, false, false},
    {"probe_seconds", &EpochRecord::probe_seconds, false, false},
}};

inline constexpr size_t kEpochColumnFields = static_cast<size_t>(std::count_if(
    kEpochFields.begin(), kEpochFields.end(), [](const EpochField& f) { return f.column; }));

// Whether a message must have a field for every entry of kEpochFields.
enum class EpochFieldCoverage { kAll, kThoseItHas };

// Sets the fields of `message` (an EpochRecordProto or a v1::EpochRecord) named in
// kEpochFields from `record`, matched by name through reflection; an absent optional
// leaves its field unset. With kAll, a message lacking a field is a logic_error.
void EpochFieldsToMessage(const EpochRecord& record, EpochFieldCoverage coverage,
                          google::protobuf::Message* message);
// The reverse, for a message with every field: an optional is set when the message has
// the field set, and reset when it has not.
void EpochFieldsFromMessage(const google::protobuf::Message& message, EpochRecord* record);

}  // namespace epochal::train
