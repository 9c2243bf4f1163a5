// Helpers for testing oneDNN layer plans against the reference kernels.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "epochal/core/bf16.h"
#include "epochal/core/rng.h"
#include "epochal/nn/dnnl_util.h"
#include "epochal/nn/layer.h"
#include "epochal/nn/precision.h"
#include "epochal/nn/reference.h"

// Skips a bf16 test, saying why, where oneDNN dispatches no native bf16.
#define REQUIRE_NATIVE_BF16()                                                \
  if (!::epochal::nn::DispatchedIsaHasBf16())                                \
  GTEST_SKIP() << "oneDNN dispatches " << ::epochal::nn::DispatchedIsaName() \
               << " here: no native bf16 (AVX512-BF16 or AMX), so the bf16 path is not available"

namespace epochal::nn::testing {

// Elementwise |a|: the reference kernels run on |inputs| give the bf16 tests their bounds.
inline ref::Array Abs(ref::Array a) {
  for (double& v : a.data) v = std::abs(v);
  return a;
}

inline ref::Array RandomArray(std::vector<int64_t> shape, uint64_t stream, double lo = -1.0,
                              double hi = 1.0) {
  ref::Array a(std::move(shape));
  CounterRng rng(1234, stream);
  for (auto& v : a.data) v = lo + (hi - lo) * rng.NextUniform();
  return a;
}

inline std::vector<float> ToFloat(const ref::Array& a) {
  return std::vector<float>(a.data.begin(), a.data.end());
}

inline ref::Array FromFloat(const std::vector<float>& v, std::vector<int64_t> shape) {
  ref::Array a(std::move(shape));
  std::copy(v.begin(), v.end(), a.data.begin());
  return a;
}

// max |actual - expected| / max |expected|.
inline double RelativeError(const std::vector<float>& actual, const ref::Array& expected) {
  EXPECT_EQ(actual.size(), expected.data.size());
  double diff = 0, scale = 1e-12;
  for (size_t i = 0; i < actual.size() && i < expected.data.size(); ++i) {
    diff = std::max(diff, std::abs(actual[i] - expected.data[i]));
    scale = std::max(scale, std::abs(expected.data[i]));
  }
  return diff / scale;
}

// Runs a layer's plan on plain inputs: memory helpers around a DnnlContext.
struct PlanHarness {
  DnnlContext ctx;
  dnnl::memory Plain(const ref::Array& a) {
    dnnl::memory m(PlainDesc(a.shape), ctx.engine);
    FromPlain(ctx, ToFloat(a), m);
    return m;
  }
  dnnl::memory Like(const dnnl::memory::desc& md, const ref::Array& a) {
    dnnl::memory m(md, ctx.engine);
    FromPlain(ctx, ToFloat(a), m);
    return m;
  }
  ref::Array Read(const dnnl::memory& m) {
    ctx.stream.wait();
    return FromFloat(ToPlain(ctx, m), m.get_desc().dims());
  }
};

constexpr double kTolerance = 1e-4;

// `a` with every value rounded to the nearest bf16 (core/bf16.h): inputs a bf16 layer
// holds exactly, and expected values after one output rounding.
inline ref::Array RoundedToBf16(ref::Array a) {
  for (double& v : a.data) v = RoundToBf16(static_cast<float>(v));
  return a;
}

// The channel-blocked layout (nChw8c) AVX2 convolutions pick, for layers that must run
// on it as is.
inline dnnl::memory::desc Blocked(const std::vector<int64_t>& shape) {
  return dnnl::memory::desc(shape, dnnl::memory::data_type::f32, dnnl::memory::format_tag::aBcd8b);
}

}  // namespace epochal::nn::testing
