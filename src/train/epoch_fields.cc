#include "epochal/train/epoch_fields.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <stdexcept>
#include <string>
#include <type_traits>

namespace epochal::train {
namespace {

using google::protobuf::FieldDescriptor;

// The field of `message` named like `f`; null when it has none and `coverage` allows that.
const FieldDescriptor* FieldOf(const google::protobuf::Message& message, const EpochField& f,
                               EpochFieldCoverage coverage) {
  const FieldDescriptor* field = message.GetDescriptor()->FindFieldByName(std::string(f.name));
  if (field == nullptr && coverage == EpochFieldCoverage::kAll) {
    throw std::logic_error(message.GetTypeName() + " lacks the epoch field " + std::string(f.name));
  }
  return field;
}

}  // namespace

void EpochFieldsToMessage(const EpochRecord& record, EpochFieldCoverage coverage,
                          google::protobuf::Message* message) {
  const google::protobuf::Reflection* reflection = message->GetReflection();
  for (const EpochField& f : kEpochFields) {
    const FieldDescriptor* field = FieldOf(*message, f, coverage);
    if (field == nullptr) continue;
    std::visit(
        [&](auto member) {
          const auto& value = record.*member;
          using T = std::decay_t<decltype(value)>;
          if constexpr (std::is_same_v<T, int>) {
            reflection->SetInt32(message, field, value);
          } else if constexpr (std::is_same_v<T, double>) {
            reflection->SetDouble(message, field, value);
          } else {
            if (value) reflection->SetDouble(message, field, *value);
          }
        },
        f.member);
  }
}

void EpochFieldsFromMessage(const google::protobuf::Message& message, EpochRecord* record) {
  const google::protobuf::Reflection* reflection = message.GetReflection();
  for (const EpochField& f : kEpochFields) {
    const FieldDescriptor* field = FieldOf(message, f, EpochFieldCoverage::kAll);
    std::visit(
        [&](auto member) {
          auto& value = record->*member;
          using T = std::decay_t<decltype(value)>;
          if constexpr (std::is_same_v<T, int>) {
            value = reflection->GetInt32(message, field);
          } else if constexpr (std::is_same_v<T, double>) {
            value = field->has_presence() && !reflection->HasField(message, field)
                        ? f.missing
                        : reflection->GetDouble(message, field);
          } else {
            value = reflection->HasField(message, field)
                        ? std::optional<double>(reflection->GetDouble(message, field))
                        : std::nullopt;
          }
        },
        f.member);
  }
}

}  // namespace epochal::train
