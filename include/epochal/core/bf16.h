// bfloat16 conversions for the hand-written loops around oneDNN's bf16 primitives: the
// upper 16 bits of an IEEE float (8-bit exponent, 7 stored significand bits), rounded to
// nearest even as oneDNN rounds, NaN kept NaN (quiet). Header-only and branch-free apart
// from the NaN select, so loops over them vectorize.
#pragma once

#include <bit>
#include <cstdint>

namespace epochal {

// The bf16 bit pattern is carried in a uint16_t; no arithmetic is done on it directly.
using Bf16Bits = uint16_t;

inline float Bf16ToFloat(Bf16Bits b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

inline Bf16Bits FloatToBf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<Bf16Bits>(nan ? (u >> 16) | 0x40u : rounded >> 16);
}

}  // namespace epochal
