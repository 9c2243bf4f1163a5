#include "epochal/report/json_writer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>

#include "epochal/core/error.h"

namespace epochal::report {
namespace {

std::string Quoted(std::string_view s) {
  std::string out;
  AppendJsonString(s, &out);
  return out;
}

TEST(JsonWriterTest, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(Quoted("plain"), R"("plain")");
  EXPECT_EQ(Quoted("say \"hi\""), R"("say \"hi\"")");
  EXPECT_EQ(Quoted("C:\\runs\\1"), R"("C:\\runs\\1")");
  EXPECT_EQ(Quoted("a\nb\tc\rd\be\ff"), R"("a\nb\tc\rd\be\ff")");
  EXPECT_EQ(Quoted(std::string("\x01\x1f", 2)), R"("\u0001\u001f")");
  EXPECT_EQ(Quoted(std::string("nul\0x", 5)), R"("nul\u0000x")");
}

TEST(JsonWriterTest, PassesUnicodeThrough) {
  // UTF-8 bytes are valid JSON string content as they are.
  EXPECT_EQ(Quoted("T-shirt/top \xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x91\x9f"),
            "\"T-shirt/top \xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x91\x9f\"");
  EXPECT_EQ(Quoted("a/b"), R"("a/b")");
}

TEST(JsonWriterTest, NonFiniteAndAbsentNumbersAreNull) {
  JsonWriter json;
  json.BeginArray()
      .Number(std::numeric_limits<double>::quiet_NaN())
      .Number(std::numeric_limits<double>::infinity())
      .Number(-std::numeric_limits<double>::infinity())
      .Number(std::optional<double>())
      .Number(std::optional<double>(0.5))
      .Null()
      .EndArray();
  EXPECT_EQ(json.str(), "[null,null,null,null,0.5,null]");
}

TEST(JsonWriterTest, NumbersRoundTrip) {
  for (double v :
       {0.1 + 0.2, 1.0 / 3.0, 1e-300, -123456.789, 0.5433, 5e-324, 1.7976931348623157e308}) {
    const std::string text = FormatJsonNumber(v);
    EXPECT_EQ(std::strtod(text.c_str(), nullptr), v) << text;
  }
  EXPECT_EQ(FormatJsonNumber(3.0), "3");
  EXPECT_EQ(FormatJsonNumber(0.1), "0.1");
}

TEST(JsonWriterTest, CompactNesting) {
  JsonWriter json;
  json.BeginObject()
      .Key("a")
      .Int(-7)
      .Key("b")
      .BeginArray()
      .Bool(true)
      .String("x")
      .BeginObject()
      .EndObject()
      .EndArray()
      .Key("c")
      .BeginArray()
      .EndArray()
      .Key("raw")
      .Raw(R"({"lr": 0.01})")
      .EndObject();
  EXPECT_TRUE(json.complete());
  EXPECT_EQ(json.str(), R"({"a":-7,"b":[true,"x",{}],"c":[],"raw":{"lr": 0.01}})");
}

TEST(JsonWriterTest, PrettyPrintsWithIndent) {
  JsonWriter json(2);
  json.BeginObject().Key("a").BeginArray().Int(1).Int(2).EndArray().Key("e").BeginArray();
  json.EndArray().EndObject();
  EXPECT_EQ(json.str(), "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"e\": []\n}");
}

TEST(JsonWriterTest, MisuseIsABug) {
  JsonWriter value_without_key;
  value_without_key.BeginObject();
  EXPECT_THROW(value_without_key.Int(1), Error);

  JsonWriter key_in_array;
  key_in_array.BeginArray();
  EXPECT_THROW(key_in_array.Key("k"), Error);

  JsonWriter unbalanced;
  unbalanced.BeginArray();
  EXPECT_THROW(unbalanced.EndObject(), Error);
  EXPECT_FALSE(unbalanced.complete());
}

}  // namespace
}  // namespace epochal::report
