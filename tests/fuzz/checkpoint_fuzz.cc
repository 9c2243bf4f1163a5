// libFuzzer target: the checkpoint loader (header, checksums, payload) and what resume
// does with a checkpoint that verifies (digest, config comparison). Mutated files rarely
// pass the CRCs, so every input is also wrapped in a correct header and decoded again:
// that drives the payload parser and what follows it.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "epochal/core/checksum.h"
#include "epochal/core/error.h"
#include "epochal/train/checkpoint.h"

namespace {

void PutLe(std::string* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xffu));
}

void Decode(std::string_view bytes) {
  try {
    const epochal::v1::Checkpoint c = epochal::train::DecodeCheckpoint(bytes, "fuzz");
    (void)epochal::train::StateDigest(c);
    epochal::train::CheckResumeCompatible(c.config(), epochal::v1::ExperimentConfig(), "fuzz");
  } catch (const epochal::InputError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  Decode(bytes);
  std::string wrapped(epochal::train::kCheckpointMagic, sizeof epochal::train::kCheckpointMagic);
  PutLe(&wrapped, epochal::train::kCheckpointVersion, 4);
  PutLe(&wrapped, 0, 4);
  PutLe(&wrapped, size, 8);
  PutLe(&wrapped, epochal::Crc32c(bytes), 4);
  PutLe(&wrapped, epochal::Crc32c(wrapped), 4);
  wrapped += bytes;
  Decode(wrapped);
  return 0;
}
