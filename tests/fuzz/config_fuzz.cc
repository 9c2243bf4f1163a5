// libFuzzer target: the experiment config parser and validator (Protobuf text format in,
// defaulted and validated ExperimentConfig or an InputError with a location out).
//
// Any config it accepts must also survive the ways a run writes it back: printed as text
// (config.textproto) and parsed again, it must give the same message; rendered as JSON
// (history.json's "config", which `epochal report` reads) and parsed again, too; and the
// memory estimate must be computable. A mismatch aborts, so libFuzzer reports the input.
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "epochal/core/error.h"
#include "epochal/train/config.h"

namespace {

[[noreturn]] void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "config_fuzz: %s\n%s\n", what, detail.c_str());
  std::abort();
}

void ExpectSame(const epochal::v1::ExperimentConfig& a, const epochal::v1::ExperimentConfig& b,
                const char* what) {
  google::protobuf::util::MessageDifferencer differ;
  std::string report;
  differ.ReportDifferencesToString(&report);
  // Floats compare bitwise-equal after a round trip; NaN never passes validation.
  if (!differ.Compare(a, b)) Fail(what, report);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  epochal::v1::ExperimentConfig config;
  try {
    config = epochal::train::ParseExperimentConfig(text, "fuzz");
  } catch (const epochal::InputError&) {
    return 0;
  }

  std::string printed;
  if (!google::protobuf::TextFormat::PrintToString(config, &printed)) {
    Fail("cannot print an accepted config", config.ShortDebugString());
  }
  epochal::v1::ExperimentConfig reread;
  try {
    reread = epochal::train::ParseExperimentConfig(printed, "fuzz (printed)");
  } catch (const epochal::InputError& e) {
    Fail("an accepted config, printed, is refused", std::string(e.what()) + "\n" + printed);
  }
  ExpectSame(config, reread, "an accepted config, printed and parsed again, differs");

  const std::string json = epochal::train::ConfigToJson(config);
  epochal::v1::ExperimentConfig from_json;
  if (!google::protobuf::util::JsonStringToMessage(json, &from_json).ok()) {
    Fail("the JSON of an accepted config does not parse", json);
  }
  ExpectSame(config, from_json, "an accepted config, through JSON and back, differs");
  try {
    epochal::train::ValidateExperimentConfig(from_json, "fuzz (json)", nullptr);
  } catch (const epochal::InputError& e) {
    Fail("an accepted config, through JSON, is refused", e.what());
  }

  const epochal::train::ModelMemoryEstimate estimate = epochal::train::EstimateModelMemory(config);
  if (!(estimate.bytes > 0)) Fail("memory estimate is not positive", config.ShortDebugString());
  return 0;
}
