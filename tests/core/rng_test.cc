#include "epochal/core/rng.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <thread>
#include <vector>

namespace epochal {
namespace {

// Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
TEST(PhiloxTest, MatchesRandom123KnownAnswers) {
  EXPECT_EQ(Philox4x32(0, 0, 0),
            (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32(~0ull, ~0ull, ~0ull),
            (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  // counter words {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, key {0xa4093822, 0x299f31d0}
  EXPECT_EQ(Philox4x32(0x299f31d0a4093822ull, 0x0370734413198a2eull, 0x85a308d3243f6a88ull),
            (std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(PhiloxTest, StreamsAndSeedsDiffer) {
  EXPECT_NE(Philox4x32(1, 0, 0), Philox4x32(2, 0, 0));
  EXPECT_NE(Philox4x32(1, 0, 0), Philox4x32(1, 1, 0));
  EXPECT_NE(Philox4x32(1, 0, 0), Philox4x32(1, 0, 1));
  EXPECT_NE(StreamId({1, 2, 3}), StreamId({1, 3, 2}));
  EXPECT_EQ(StreamId({1, 2, 3}), StreamId({1, 2, 3}));
}

TEST(CounterRngTest, SameValuesFromAnyThread) {
  auto draw = [](std::vector<float>* out) {
    CounterRng rng(42, StreamId({7}));
    for (auto& v : *out) v = rng.NextUniform();
  };
  std::vector<float> a(1000), b(1000);
  draw(&a);
  std::thread t(draw, &b);
  t.join();
  EXPECT_EQ(a, b);
}

TEST(CounterRngTest, UniformMomentsAndRange) {
  CounterRng rng(3, 4);
  double sum = 0, sum_sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const float u = rng.NextUniform();
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
    sum_sq += u * u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  EXPECT_NEAR(sum_sq / n - (sum / n) * (sum / n), 1.0 / 12.0, 0.002);
}

TEST(CounterRngTest, BelowCoversRangeOnly) {
  CounterRng rng(5, 6);
  std::set<uint64_t> seen;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t v = rng.NextBelow(7);
    ASSERT_LT(v, 7u);
    seen.insert(v);
  }
  EXPECT_EQ(seen.size(), 7u);
}

}  // namespace
}  // namespace epochal
