#include "epochal/report/json_writer.h"

#include <charconv>
#include <cmath>
#include <system_error>

#include "epochal/core/error.h"

namespace epochal::report {

void AppendJsonString(std::string_view value, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (u < 0x20) {
          out->append("\\u00");
          out->push_back(kHex[u >> 4]);
          out->push_back(kHex[u & 0xf]);
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

std::string FormatJsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  char buf[32];
  const auto result = std::to_chars(buf, buf + sizeof(buf), value);
  EPOCHAL_CHECK(result.ec == std::errc(), "to_chars failed");
  return std::string(buf, result.ptr);
}

void JsonWriter::Newline(size_t depth) {
  if (indent_ <= 0) return;
  out_.push_back('\n');
  out_.append(depth * static_cast<size_t>(indent_), ' ');
}

void JsonWriter::BeforeValue() {
  if (stack_.empty()) {
    EPOCHAL_CHECK(!has_root_, "JSON document already has a root value");
    has_root_ = true;
    return;
  }
  Level& level = stack_.back();
  if (level.is_object) {
    EPOCHAL_CHECK(level.key_pending, "JSON object value without a key");
    level.key_pending = false;
    return;  // Key() already wrote the separator.
  }
  if (!level.empty) out_.push_back(',');
  level.empty = false;
  Newline(stack_.size());
}

JsonWriter& JsonWriter::Key(std::string_view key) {
  EPOCHAL_CHECK(!stack_.empty() && stack_.back().is_object, "JSON key outside an object");
  Level& level = stack_.back();
  EPOCHAL_CHECK(!level.key_pending, "JSON key '", key, "' follows a key without a value");
  if (!level.empty) out_.push_back(',');
  level.empty = false;
  level.key_pending = true;
  Newline(stack_.size());
  AppendJsonString(key, &out_);
  out_.append(indent_ > 0 ? ": " : ":");
  return *this;
}

JsonWriter& JsonWriter::BeginObject() {
  BeforeValue();
  out_.push_back('{');
  stack_.push_back({.is_object = true});
  return *this;
}

JsonWriter& JsonWriter::BeginArray() {
  BeforeValue();
  out_.push_back('[');
  stack_.push_back({.is_object = false});
  return *this;
}

JsonWriter& JsonWriter::End(bool is_object) {
  EPOCHAL_CHECK(!stack_.empty() && stack_.back().is_object == is_object, "unbalanced JSON ",
                is_object ? "object" : "array");
  EPOCHAL_CHECK(!stack_.back().key_pending, "JSON key without a value");
  const bool empty = stack_.back().empty;
  stack_.pop_back();
  if (!empty) Newline(stack_.size());
  out_.push_back(is_object ? '}' : ']');
  return *this;
}

JsonWriter& JsonWriter::EndObject() { return End(true); }
JsonWriter& JsonWriter::EndArray() { return End(false); }

JsonWriter& JsonWriter::String(std::string_view value) {
  BeforeValue();
  AppendJsonString(value, &out_);
  return *this;
}

JsonWriter& JsonWriter::Number(double value) {
  BeforeValue();
  out_.append(FormatJsonNumber(value));
  return *this;
}

JsonWriter& JsonWriter::Number(std::optional<double> value) {
  return value ? Number(*value) : Null();
}

JsonWriter& JsonWriter::Int(int64_t value) {
  BeforeValue();
  out_.append(std::to_string(value));
  return *this;
}

JsonWriter& JsonWriter::Bool(bool value) {
  BeforeValue();
  out_.append(value ? "true" : "false");
  return *this;
}

JsonWriter& JsonWriter::Null() {
  BeforeValue();
  out_.append("null");
  return *this;
}

JsonWriter& JsonWriter::Raw(std::string_view json) {
  BeforeValue();
  out_.append(json);
  return *this;
}

}  // namespace epochal::report
