// bfloat16 as the gradient all-reduce sends it: the upper 16 bits of an IEEE float (sign,
// 8 exponent bits, 7 stored mantissa bits, so 8 significant bits with the implicit one).
// Same range as float. The spacing of bf16 values in [2^e, 2^(e+1)) is 2^(e-7), so one
// rounding to nearest is off by at most half of it, 2^(e-8): at most u = 2^-8 of the value
// (u / (1 + u) exactly, for normal numbers; 1 + 2^-8 rounds to 1). Not 2^-9: that would
// take 9 significant bits.
//
// Conversion from float rounds to nearest, ties to even; NaN stays NaN (quieted, sign
// kept); values past bf16's largest finite number round to infinity as IEEE rounding
// does. Conversion to float is exact. Pure functions, no MPI.
#pragma once

#include <bit>
#include <cstdint>

namespace epochal::dist {

inline uint16_t FloatToBf16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    // NaN: truncating could clear every mantissa bit left and turn it into infinity.
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  // Adding 0x7fff rounds up exactly when the dropped half is above one half; the kept
  // lowest bit breaks the tie towards even. A carry into the exponent is the correct
  // result (up to infinity).
  const uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

inline float Bf16ToFloat(uint16_t value) {
  return std::bit_cast<float>(static_cast<uint32_t>(value) << 16);
}

// `value` rounded to the nearest bf16, as a float.
inline float RoundToBf16(float value) { return Bf16ToFloat(FloatToBf16(value)); }

}  // namespace epochal::dist
