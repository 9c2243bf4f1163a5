// libFuzzer target: the experiment config parser and validator (Protobuf text format in,
// defaulted and validated ExperimentConfig or an InputError with a location out).
#include <cstddef>
#include <cstdint>
#include <string>

#include "epochal/core/error.h"
#include "epochal/train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const epochal::v1::ExperimentConfig c = epochal::train::ParseExperimentConfig(text, "fuzz");
    (void)epochal::train::ConfigToJson(c);
  } catch (const epochal::InputError&) {
  }
  return 0;
}
