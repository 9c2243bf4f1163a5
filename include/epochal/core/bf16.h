// bfloat16, as the bf16 layers (nn) and the bf16 gradient all-reduce (dist) store it: the
// upper 16 bits of an IEEE float (sign, 8 exponent bits, 7 stored significand bits, so 8
// significant bits with the implicit one). Same range as float. The spacing of bf16 values
// in [2^e, 2^(e+1)) is 2^(e-7), so one rounding to nearest is off by at most half of it,
// 2^(e-8): at most u = 2^-8 of the value (u / (1 + u) exactly, for normal numbers;
// 1 + 2^-8 rounds to 1). Not 2^-9: that would take 9 significant bits.
//
// Conversion from float rounds to nearest, ties to even, as oneDNN's bf16 primitives
// round; NaN stays NaN (quieted, sign kept); values past bf16's largest finite number
// round to infinity as IEEE rounding does. Conversion to float is exact. Header-only,
// pure and branch-free apart from the NaN select, so loops over them vectorize.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

namespace epochal {

// The bf16 bit pattern is carried in a uint16_t; no arithmetic is done on it directly.
using Bf16Bits = uint16_t;

inline float Bf16ToFloat(Bf16Bits value) {
  return std::bit_cast<float>(static_cast<uint32_t>(value) << 16);
}

inline Bf16Bits FloatToBf16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  // Adding 0x7fff rounds up exactly when the dropped half is above one half; the kept
  // lowest bit breaks the tie towards even. A carry into the exponent is the correct
  // result (up to infinity).
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  // NaN: rounding could carry it into infinity (or the sign), truncating could clear
  // every mantissa bit left; setting the quiet bit keeps it NaN. A select, not a branch.
  const uint32_t nan = (bits >> 16) | 0x0040u;
  return static_cast<Bf16Bits>((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

// `value` rounded to the nearest bf16, as a float.
inline float RoundToBf16(float value) { return Bf16ToFloat(FloatToBf16(value)); }

// The same element by element over arrays that do not overlap. Blocks of a fixed 16
// elements let GCC vectorize at -O2 (its cheap cost model takes loops of known trip count
// only); the rest is done one by one.
inline void FloatsToBf16(const float* __restrict in, Bf16Bits* __restrict out, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (size_t k = 0; k < 16; ++k) out[i + k] = FloatToBf16(in[i + k]);
  }
  for (; i < n; ++i) out[i] = FloatToBf16(in[i]);
}

inline void Bf16ToFloats(const Bf16Bits* __restrict in, float* __restrict out, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (size_t k = 0; k < 16; ++k) out[i + k] = Bf16ToFloat(in[i + k]);
  }
  for (; i < n; ++i) out[i] = Bf16ToFloat(in[i]);
}

// inout[i] = bf16(float(in[i]) + float(inout[i])): the bf16 all-reduce's op.
inline void AddBf16(const Bf16Bits* __restrict in, Bf16Bits* __restrict inout, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (size_t k = 0; k < 16; ++k) {
      inout[i + k] = FloatToBf16(Bf16ToFloat(in[i + k]) + Bf16ToFloat(inout[i + k]));
    }
  }
  for (; i < n; ++i) inout[i] = FloatToBf16(Bf16ToFloat(in[i]) + Bf16ToFloat(inout[i]));
}

}  // namespace epochal
