// The hand-written reorders of dnnl_util against oneDNN's own reorder, bit for bit.
#include "epochal/nn/dnnl_util.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "layer_test_util.h"

namespace epochal::nn {
namespace {

struct PairCase {
  int64_t a, b;  // Output and input features of a dense layer's weights.
  tag f32, bf16;
};

class PairInterleaveTest : public ::testing::TestWithParam<PairCase> {};

// Dense weights go from the f32 layout the optimizer keeps to the bf16 layout the forward
// reads. Sizes that are no multiple of the blocks have zero padding, which must come out
// zero too. Values span many binades and include ties of bf16 rounding and subnormals.
TEST_P(PairInterleaveTest, MatchesOneDnnsReorderBitForBit) {
  const PairCase p = GetParam();
  testing::PlanHarness h;
  const dnnl::memory::desc from({p.a, p.b}, dt::f32, p.f32), to({p.a, p.b}, dt::bf16, p.bf16);
  ReorderIfNeeded hand(from, to, h.ctx.engine);
  ASSERT_TRUE(hand.hand_written());
  const ref::Array values = testing::RandomArray({p.a, p.b}, 3, -4, 4);
  std::vector<float> plain = testing::ToFloat(values);
  for (size_t i = 0; i < plain.size(); i += 7)
    plain[i] = std::ldexp(plain[i], static_cast<int>(i % 60) - 30);
  for (size_t i = 5; i < plain.size(); i += 13) plain[i] = std::ldexp(plain[i], -128);  // subnormal
  for (size_t i = 3; i < plain.size(); i += 11) {
    // Exactly halfway between two bf16 values: ties go to even.
    plain[i] = std::bit_cast<float>(0x3f808000u | (static_cast<uint32_t>(i & 1) << 16));
  }
  dnnl::memory src(from, h.ctx.engine);
  FromPlain(h.ctx, plain, src);
  const dnnl::memory& ours = hand.Apply(h.ctx.stream, src);
  dnnl::memory theirs(to, h.ctx.engine);
  dnnl::reorder(src, theirs).execute(h.ctx.stream, src, theirs);
  h.ctx.stream.wait();
  ASSERT_EQ(to.get_size(), ours.get_desc().get_size());
  const auto* a = static_cast<const uint16_t*>(ours.get_data_handle());
  const auto* b = static_cast<const uint16_t*>(theirs.get_data_handle());
  // Subnormal inputs: ours become a zero of their sign, as oneDNN's AVX-512 reorder
  // makes them (and as bf16 dot products read them). oneDNN's reference reorder
  // (ONEDNN_MAX_CPU_ISA=AVX2) writes bf16 subnormals or +0 instead, so there a zero of
  // ours may stand against a zero or a subnormal of oneDNN's.
  size_t differ = 0, first = 0, flushed = 0;
  for (size_t i = 0; i < to.get_size() / 2; ++i) {
    if (a[i] == b[i]) continue;
    const bool tiny = (b[i] & 0x7f80u) == 0;  // zero or subnormal
    if (tiny && (a[i] & 0x7fffu) == 0) {
      ++flushed;
      continue;
    }
    if (differ++ == 0) first = i;
  }
  EXPECT_EQ(differ, 0u) << "first at " << first << ": " << a[first] << " against " << b[first];
  RecordProperty("subnormals_oneDNN_kept", std::to_string(flushed));
}

INSTANTIATE_TEST_SUITE_P(Layouts, PairInterleaveTest,
                         ::testing::Values(PairCase{512, 3136, tag::AB16b64a, tag::AB8b64a2b},
                                           PairCase{100, 40, tag::AB16b64a, tag::AB8b64a2b},
                                           PairCase{64, 48, tag::AB16b32a, tag::AB8b32a2b},
                                           PairCase{10, 17, tag::AB16b16a, tag::AB8b16a2b}));

TEST(PairInterleaveSelectionTest, OtherReordersStayOnOneDnn) {
  testing::PlanHarness h;
  const dnnl::memory::dims d = {64, 64};
  EXPECT_FALSE(ReorderIfNeeded(dnnl::memory::desc(d, dt::f32, tag::ab),
                               dnnl::memory::desc(d, dt::bf16, tag::AB8b64a2b), h.ctx.engine)
                   .hand_written());
  EXPECT_FALSE(ReorderIfNeeded(dnnl::memory::desc(d, dt::f32, tag::AB16b64a),
                               dnnl::memory::desc(d, dt::f32, tag::ab), h.ctx.engine)
                   .hand_written());
  EXPECT_FALSE(ReorderIfNeeded(dnnl::memory::desc(d, dt::f32, tag::AB16b64a),
                               dnnl::memory::desc(d, dt::bf16, tag::AB8b32a2b), h.ctx.engine)
                   .hand_written());
}

}  // namespace
}  // namespace epochal::nn
