// Small helpers around oneDNN (v2 API, as Debian 12 ships it): the engine/stream pair,
// reorders that run only when two layouts differ, and logical-to-physical offsets of
// blocked layouts.
// Thread safety: a DnnlContext and everything built on it belong to one thread.
#pragma once

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <span>
#include <unordered_map>
#include <vector>

namespace epochal::nn {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// The CPU engine and the in-order stream every primitive of a model runs on.
struct DnnlContext {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};

// A memory descriptor for data of `dims` in a plain layout (nc, nchw, x, oihw...).
dnnl::memory::desc PlainDesc(const dnnl::memory::dims& dims, dt type = dt::f32);
// The same dims with format_tag::any, letting a primitive choose its layout.
dnnl::memory::desc AnyDesc(const dnnl::memory::dims& dims, dt type = dt::f32);
// A new CPU memory of `md`, zero-filled: blocked layouts pad channels to the block size,
// and oneDNN primitives expect those padding elements to be zero.
dnnl::memory ZeroedMemory(const dnnl::memory::desc& md, const dnnl::engine& engine);
// Number of elements (of the desc's data type) a memory holds, padding included.
int64_t PhysicalSize(const dnnl::memory::desc& md);
// Pointer to a CPU memory's floats (an f32 memory: parameters, gradients, f32 activations).
inline float* Data(const dnnl::memory& m) { return static_cast<float*>(m.get_data_handle()); }
std::span<float> Span(const dnnl::memory& m);

// Physical element offset of the logical index `idx` (one entry per dim) in `md`,
// following oneDNN's blocking description (outer strides plus inner blocks).
int64_t PhysicalOffset(const dnnl::memory::desc& md, std::span<const int64_t> idx);

// For each physical element of one sample (dims[0] == 1 slice) of `md`, the logical
// index within the sample in plain row-major order, or -1 for padding. Requires the
// batch dim to be outermost, so every sample occupies one contiguous physical slice.
std::vector<int32_t> SampleLogicalIndex(const dnnl::memory::desc& md);

// Converts `from`'s layout to `to`'s when they differ; a no-op pass-through when they
// agree. Created once per shape; Apply neither allocates nor throws on the hot path.
class ReorderIfNeeded {
 public:
  ReorderIfNeeded() = default;
  ReorderIfNeeded(const dnnl::memory::desc& from, const dnnl::memory::desc& to,
                  const dnnl::engine& engine);
  bool needed() const { return needed_; }
  // Whether this reorder runs on the hand-written loop: f32 AB16b<n>a to bf16 AB8b<n>a2b
  // (n = 16, 32, 64), the dense weights' conversion for the bf16 forward, once a step. On
  // MiniVGGNet's fc1 (512 x 3136, 2 threads) oneDNN 2.6's reorder took 0.53-0.63 ms,
  // this loop 0.33-0.39 ms.
  bool hand_written() const { return pair_a_block_ != 0; }
  // Returns `src` when no reorder is needed, else the reordered copy.
  const dnnl::memory& Apply(dnnl::stream& stream, const dnnl::memory& src);

 private:
  bool needed_ = false;
  int pair_a_block_ = 0;  // The hand-written conversion's A block, 0 for oneDNN's reorder.
  int64_t blocks_ = 0;    // Its 16 x A-block blocks, padding included.
  dnnl::memory buffer_;
  dnnl::reorder reorder_;
};

// A primitive output that must land in `target`, which may use another layout than the
// primitive writes: memory() is where the primitive writes; Commit copies it over.
class OutputReorder {
 public:
  OutputReorder() = default;
  OutputReorder(const dnnl::memory::desc& produced, const dnnl::memory& target,
                const dnnl::engine& engine);
  const dnnl::memory& memory() const { return needed_ ? buffer_ : target_; }
  void Commit(dnnl::stream& stream);

 private:
  bool needed_ = false;
  dnnl::memory target_;
  dnnl::memory buffer_;
  dnnl::reorder reorder_;
};

// The backward of a ReLU fused into a conv or dense primitive as a post-op: the
// derivative comes from the saved post-ReLU dst (eltwise_relu_use_dst_for_bwd). In place
// on diff_dst, which must have dst's layout, as it does in the model (0.52 became 0.28 ms
// per call on MiniVGGNet's 32 x 32 x 28 x 28 gradients, f32, 2 threads, against a buffer
// of its own). Created once per shape; Apply neither allocates nor throws in steady
// state (it throws Error for a diff_dst of another layout).
class FusedReluBackward {
 public:
  FusedReluBackward() = default;
  FusedReluBackward(const dnnl::memory::desc& dst_md, const dnnl::engine& engine);
  // Writes the diff of the pre-ReLU output over diff_dst, given the post-ReLU `dst`, and
  // returns diff_dst (LayerPlan::Backward may overwrite its diff_dst).
  const dnnl::memory& Apply(dnnl::stream& stream, const dnnl::memory& dst,
                            const dnnl::memory& diff_dst);

 private:
  dnnl::eltwise_backward primitive_;
  dnnl::memory::desc dst_md_;
  std::unordered_map<int, dnnl::memory> args_;
};

// Elements of `md` in bytes: 4 for f32, 2 for bf16.
size_t ElementBytes(const dnnl::memory::desc& md);

// Copies a memory into a plain-layout float vector (tests, checkpoints, exports).
std::vector<float> ToPlain(DnnlContext& ctx, const dnnl::memory& m);
// Writes plain-layout floats into a memory of any layout (padding becomes zero).
void FromPlain(DnnlContext& ctx, std::span<const float> plain, const dnnl::memory& m);

}  // namespace epochal::nn
