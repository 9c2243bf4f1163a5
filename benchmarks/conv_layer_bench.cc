// epochal_conv_bench: Google Benchmark micro-benchmarks of one conv layer's forward and
// backward pass, for the four conv shapes of MiniVGGNet at batch 32. Each benchmark
// reports FLOP/s (2 x multiply-adds: forward; backward-weights plus backward-data unless
// the layer is the first) so it can be set beside the sgemm peak epochal_bench prints.
//
// The layer under test sees its input in the layout it gets inside the model: for the
// first conv the plain [N, 1, H, W] batch, for the others the blocked dst layout of a
// preceding conv (which is what a batch-norm plan passes on unchanged).
// Run: build/benchmarks/epochal_conv_bench [--benchmark_filter=...]; set the thread
// count with OMP_NUM_THREADS.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <span>
#include <string>
#include <vector>

#include "epochal/nn/conv2d.h"
#include "epochal/nn/dnnl_util.h"
#include "epochal/nn/layer.h"

namespace epochal::bench {
namespace {

constexpr int64_t kBatch = 32;

// One conv layer and its plan, fed by a producer plan so the input layout matches the
// model's.
struct ConvFixture {
  nn::DnnlContext dnnl_ctx;
  std::unique_ptr<nn::Conv2D> producer;
  std::unique_ptr<nn::LayerPlan> producer_plan;
  std::unique_ptr<nn::Conv2D> conv;
  std::unique_ptr<nn::LayerPlan> plan;
  dnnl::memory input;     // Plain [N, 1, H, W].
  dnnl::memory diff_dst;  // In the plan's dst layout.
  std::vector<int64_t> sample_ids;
  nn::StepContext ctx;
  double forward_flops = 0;  // Per batch.
  bool first = false;

  ConvFixture(int64_t in_channels, int64_t size, int64_t filters) {
    const dnnl::memory::desc input_md = nn::PlainDesc({kBatch, 1, size, size});
    input = dnnl::memory(input_md, dnnl_ctx.engine);
    std::span<float> in = nn::Span(input);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 255) / 255.0f;
    dnnl::memory::desc src_md = input_md;
    first = in_channels == 1;
    if (!first) {
      nn::Conv2DOptions po;
      po.filters = in_channels;
      po.fuse_relu = true;
      producer = std::make_unique<nn::Conv2D>("producer", po);
      producer_plan = producer->MakePlan(dnnl_ctx, input_md);
      producer->InitializeParameters(dnnl_ctx, 1);
      src_md = producer_plan->dst().get_desc();
    }
    nn::Conv2DOptions o;
    o.filters = filters;
    o.fuse_relu = true;
    conv = std::make_unique<nn::Conv2D>("conv", o);
    plan = conv->MakePlan(dnnl_ctx, src_md);
    conv->InitializeParameters(dnnl_ctx, 2);
    diff_dst = dnnl::memory(plan->dst().get_desc(), dnnl_ctx.engine);
    std::span<float> d = nn::Span(diff_dst);
    for (size_t i = 0; i < d.size(); ++i) d[i] = (static_cast<float>(i % 7) - 3.0f) / 32.0f;
    sample_ids.resize(kBatch);
    ctx.sample_ids = sample_ids;
    forward_flops = conv->ForwardFlopsPerSample(src_md.dims()) * static_cast<double>(kBatch);
    if (producer_plan) {
      producer_plan->Forward(ctx, input);
      dnnl_ctx.stream.wait();
    }
  }

  const dnnl::memory& src() const { return producer_plan ? producer_plan->dst() : input; }
};

void SetLabel(benchmark::State& state) {
  state.SetLabel("ic" + std::to_string(state.range(0)) + " " + std::to_string(state.range(1)) +
                 "x" + std::to_string(state.range(1)) + " oc" + std::to_string(state.range(2)));
}

void BM_ConvForward(benchmark::State& state) {
  ConvFixture f(state.range(0), state.range(1), state.range(2));
  for (auto _ : state) {
    f.plan->Forward(f.ctx, f.src());
    f.dnnl_ctx.stream.wait();
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(f.forward_flops, benchmark::Counter::kIsIterationInvariantRate);
  SetLabel(state);
}

void BM_ConvBackward(benchmark::State& state) {
  ConvFixture f(state.range(0), state.range(1), state.range(2));
  f.plan->Forward(f.ctx, f.src());
  f.dnnl_ctx.stream.wait();
  // Backward may overwrite diff_dst (a fused ReLU's derivative, in place). Reusing it is
  // fine for timing: the same dst masks the same elements again, so every pass computes
  // on the same values.
  for (auto _ : state) {
    f.plan->Backward(f.ctx, f.src(), f.diff_dst, !f.first);
    f.dnnl_ctx.stream.wait();
  }
  const double flops = (f.first ? 1.0 : 2.0) * f.forward_flops;
  state.counters["FLOP/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  SetLabel(state);
}

// {in_channels, height = width, filters}: conv1_1, conv1_2, conv2_1, conv2_2.
void MiniVggConvs(benchmark::internal::Benchmark* b) {
  b->Args({1, 28, 32})->Args({32, 28, 32})->Args({32, 14, 64})->Args({64, 14, 64});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_ConvForward)->Apply(MiniVggConvs);
BENCHMARK(BM_ConvBackward)->Apply(MiniVggConvs);

}  // namespace
}  // namespace epochal::bench

BENCHMARK_MAIN();
