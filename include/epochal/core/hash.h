// FNV-1a (64-bit): the one non-cryptographic hash, for keys that must be stable across
// builds and machines (a layer name's random stream, the replicas' weight hashes).
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace epochal {

inline constexpr uint64_t kFnv1aOffset = 0xcbf29ce484222325ull;

// FNV-1a of `bytes` bytes at `data`, continuing from `hash` (kFnv1aOffset to start).
inline uint64_t Fnv1a(const void* data, size_t bytes, uint64_t hash = kFnv1aOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 0x100000001b3ull;
  return hash;
}

inline uint64_t Fnv1a(std::string_view text, uint64_t hash = kFnv1aOffset) {
  return Fnv1a(text.data(), text.size(), hash);
}

}  // namespace epochal
