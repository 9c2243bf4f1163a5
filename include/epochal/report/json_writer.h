// JsonWriter: a small streaming JSON emitter into a std::string.
//
//   JsonWriter json(/*indent=*/2);
//   json.BeginObject().Key("loss").Number(0.54).Key("findings").BeginArray().EndArray()
//       .EndObject();
//   WriteFileAtomic(path, json.str());
//
// Numbers use the shortest representation that round-trips a double (std::to_chars);
// NaN, infinities and an empty std::optional become null. Strings are escaped per
// RFC 8259 (quote, backslash and control characters); other bytes, including UTF-8
// sequences, pass through unchanged. Raw() inserts pre-rendered JSON as one value and
// trusts it. Misuse (a value without a key inside an object, unbalanced End*) is a bug
// and throws epochal::Error.
// Thread safety: none.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace epochal::report {

class JsonWriter {
 public:
  // indent = 0 writes everything on one line; > 0 pretty-prints with that many spaces.
  explicit JsonWriter(int indent = 0) : indent_(indent) {}

  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  // The key of the next value; only inside an object.
  JsonWriter& Key(std::string_view key);

  JsonWriter& String(std::string_view value);
  JsonWriter& Number(double value);
  JsonWriter& Number(std::optional<double> value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();
  // Pre-rendered JSON inserted verbatim as one value.
  JsonWriter& Raw(std::string_view json);

  // The document so far; complete once every Begin* is matched.
  const std::string& str() const { return out_; }
  bool complete() const { return stack_.empty() && has_root_; }

 private:
  struct Level {
    bool is_object;
    bool empty = true;
    bool key_pending = false;
  };
  // Separator, newline and indentation before a value (or key) at the current level.
  void BeforeValue();
  void Newline(size_t depth);
  JsonWriter& End(bool is_object);

  int indent_;
  std::string out_;
  std::vector<Level> stack_;
  bool has_root_ = false;
};

// Appends `value` to `out` as a quoted, escaped JSON string.
void AppendJsonString(std::string_view value, std::string* out);
// Shortest round-trip text of a finite double ("0.1", "3", "1e-07"); "null" otherwise.
std::string FormatJsonNumber(double value);

}  // namespace epochal::report
