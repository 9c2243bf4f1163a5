// The bf16 conversions of core/bf16.h, which the bf16 layers and the bf16 all-reduce share.
#include "epochal/core/bf16.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gtest/gtest.h"

namespace epochal {
namespace {

float FromBits(uint32_t bits) { return std::bit_cast<float>(bits); }

TEST(Bf16Test, RepresentableValuesRoundTrip) {
  // Floats whose low 16 bits are zero are bf16 values: they come back bit for bit.
  for (uint32_t bits : {0x00000000u, 0x80000000u, 0x3f800000u, 0xc0200000u, 0x3e200000u,
                        0x7f7f0000u, 0x00800000u, 0x00010000u}) {
    EXPECT_EQ(std::bit_cast<uint32_t>(RoundToBf16(FromBits(bits))), bits) << std::hex << bits;
  }
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80u);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xc000u);
  EXPECT_EQ(Bf16ToFloat(0x3fc0u), 1.5f);
  EXPECT_EQ(std::bit_cast<uint32_t>(RoundToBf16(-0.0f)), 0x80000000u);
}

TEST(Bf16Test, RoundsToNearestTiesToEven) {
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7 (bf16's spacing at 1): ties go to the even
  // mantissa, 1. Just above the tie rounds up.
  EXPECT_EQ(RoundToBf16(1.0f + std::ldexp(1.0f, -8)), 1.0f);
  EXPECT_EQ(RoundToBf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)),
            1.0f + std::ldexp(1.0f, -7));
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up.
  EXPECT_EQ(RoundToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 1.0f + std::ldexp(1.0f, -6));
  // Below the tie: down.
  EXPECT_EQ(RoundToBf16(1.0f + std::ldexp(1.0f, -9)), 1.0f);
  EXPECT_EQ(RoundToBf16(-(1.0f + 3 * std::ldexp(1.0f, -8))), -(1.0f + std::ldexp(1.0f, -6)));
  // A carry into the exponent: the largest float below 2 rounds to 2.
  EXPECT_EQ(RoundToBf16(FromBits(0x3fffffffu)), 2.0f);
}

// 8 significant bits: half the spacing is 2^-8 of the leading power of two.
TEST(Bf16Test, RelativeErrorIsAtMostTwoToTheMinusEight) {
  const double u = std::ldexp(1.0, -8);
  // Attained, up to the factor 1 / (1 + u): a tie just above 1 rounds down to 1.
  const float tie = 1.0f + std::ldexp(1.0f, -8);
  EXPECT_EQ(static_cast<double>(tie) - RoundToBf16(tie), u);
  EXPECT_GT(u / tie, std::ldexp(1.0, -9) * 1.99);
  // Every 4097th float bit pattern between 2^-100 and 2^100, both signs.
  for (uint32_t bits = 0x0d800000u; bits < 0x71800000u; bits += 4097u) {
    for (uint32_t sign : {0u, 0x80000000u}) {
      const float v = FromBits(bits | sign);
      const double error = std::fabs(static_cast<double>(RoundToBf16(v)) - v);
      ASSERT_LE(error, u * std::fabs(static_cast<double>(v))) << v;
    }
  }
}

TEST(Bf16Test, NanStaysNanAndInfinitiesStay) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(RoundToBf16(inf), inf);
  EXPECT_EQ(RoundToBf16(-inf), -inf);
  EXPECT_TRUE(std::isnan(RoundToBf16(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload sits only in the low 16 bits: truncating or rounding it would
  // give infinity (0x7f80) or carry into the sign.
  EXPECT_TRUE(std::isnan(RoundToBf16(FromBits(0x7f800001u))));
  EXPECT_TRUE(std::isnan(RoundToBf16(FromBits(0xff80ffffu))));
  EXPECT_TRUE(std::signbit(RoundToBf16(FromBits(0xff80ffffu))));
  EXPECT_TRUE(std::isnan(RoundToBf16(FromBits(0x7fffffffu))));
  // Past bf16's largest finite value (0x7f7f) by at least half a step: infinity.
  EXPECT_EQ(RoundToBf16(std::numeric_limits<float>::max()), inf);
  EXPECT_EQ(RoundToBf16(FromBits(0x7f7f7fffu)), FromBits(0x7f7f0000u));
}

// The array forms (vectorized blocks of 16, then a tail) agree with the scalar ones at
// every length and offset into a block, NaN and ties included.
TEST(Bf16Test, ArrayFormsMatchTheScalarOnes) {
  std::vector<float> in;
  for (int i = 0; i < 53; ++i) {
    in.push_back(std::ldexp(1.0f + static_cast<float>(i) * 0x1.0p-10f, i % 9 - 4) *
                 (i % 2 ? -1.0f : 1.0f));
  }
  in[7] = std::numeric_limits<float>::quiet_NaN();
  in[20] = FromBits(0x7f800001u);              // NaN with its payload in the low bits
  in[33] = 1.0f + std::ldexp(1.0f, -8);        // a tie
  in[40] = std::numeric_limits<float>::max();  // rounds to infinity
  for (size_t n = 0; n <= in.size(); ++n) {
    std::vector<uint16_t> out(n), other(n);
    FloatsToBf16(in.data(), out.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], FloatToBf16(in[i])) << n << " " << i;
    std::vector<float> back(n);
    Bf16ToFloats(out.data(), back.data(), n);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(Bf16ToFloat(out[i])));
    }
    for (size_t i = 0; i < n; ++i) other[i] = FloatToBf16(0.75f * static_cast<float>(i) - 3.0f);
    std::vector<uint16_t> sum = other;
    AddBf16(out.data(), sum.data(), n);
    for (size_t i = 0; i < n; ++i) {
      const uint16_t expected = FloatToBf16(Bf16ToFloat(out[i]) + Bf16ToFloat(other[i]));
      ASSERT_EQ(sum[i], expected) << n << " " << i;
    }
  }
}

}  // namespace
}  // namespace epochal
