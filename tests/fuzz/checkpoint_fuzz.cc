// libFuzzer target: the checkpoint loader (header, checksums, payload) and what resume
// does with a checkpoint that verifies (digest, config comparison).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "epochal/core/error.h"
#include "epochal/train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const epochal::v1::Checkpoint c = epochal::train::DecodeCheckpoint(bytes, "fuzz");
    (void)epochal::train::StateDigest(c);
    epochal::train::CheckResumeCompatible(c.config(), epochal::v1::ExperimentConfig(), "fuzz");
  } catch (const epochal::InputError&) {
  }
  return 0;
}
