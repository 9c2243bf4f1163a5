// Internals of the leakage scan shared by leakage.cc and leakage_transforms.cc.
#pragma once

#include <cstdint>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/data/idx.h"
#include "epochal/data/leakage.h"

namespace epochal::data::internal {

// [rows, dim] x [width, dim]^T -> [rows, width]: dot products of validation rows (src)
// with training rows (weights, stored row by row, i.e. the [dim, width] matrix
// transposed) through oneDNN's f32 matmul. The caller owns src and weights; dst is owned
// here. One primitive per width, created on first use; widths are multiples of
// multiples of a step up to max_width, so there are few. Not copyable (owns primitives).
class DotProducts {
 public:
  DotProducts(int64_t rows, int64_t dim, int64_t max_width)
      : rows_(rows), dim_(dim), dst_(static_cast<size_t>(rows * max_width)) {}
  DotProducts(const DotProducts&) = delete;
  DotProducts& operator=(const DotProducts&) = delete;

  // Row r of the result starts at dst() + r * width.
  const float* dst() const { return dst_.data(); }

  void Run(int64_t width, const float* src, const float* weights) {
    auto it = by_width_.find(width);
    if (it == by_width_.end()) it = by_width_.emplace(width, Create(width)).first;
    Gemm& g = it->second;
    // oneDNN takes void* handles; the matmul only reads src and weights.
    g.src.set_data_handle(const_cast<float*>(src));
    g.weights.set_data_handle(const_cast<float*>(weights));
    g.matmul.execute(stream_,
                     {{DNNL_ARG_SRC, g.src}, {DNNL_ARG_WEIGHTS, g.weights}, {DNNL_ARG_DST, g.dst}});
    stream_.wait();
  }

 private:
  struct Gemm {
    dnnl::matmul matmul;
    dnnl::memory src, weights, dst;
  };

  Gemm Create(int64_t width) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dnnl::memory::desc src_md({rows_, dim_}, dt::f32, tag::ab);
    const dnnl::memory::desc weights_md({dim_, width}, dt::f32, tag::ba);
    const dnnl::memory::desc dst_md({rows_, width}, dt::f32, tag::ab);
    try {
      Gemm g;
      g.matmul = dnnl::matmul(
          dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, weights_md, dst_md), engine_));
      g.src = dnnl::memory(src_md, engine_, DNNL_MEMORY_NONE);
      g.weights = dnnl::memory(weights_md, engine_, DNNL_MEMORY_NONE);
      g.dst = dnnl::memory(dst_md, engine_, dst_.data());
      return g;
    } catch (const dnnl::error& e) {
      throw SystemError(std::string("leakage scan: oneDNN matmul: ") + e.what());
    }
  }

  int64_t rows_, dim_;
  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream_{engine_};
  std::vector<float> dst_;
  std::map<int64_t, Gemm> by_width_;
};

// The transformed pairs (shifted, photometric, mirrored) of validation rows
// [val_begin, val_end) that have neither an exact nor a near twin (skip[v - val_begin] is
// 0), appended to `pairs` (any order); adds the GEMM work and candidates to `report`.
void ScanTransformed(const Dataset& train, const Dataset& val, const LeakageOptions& options,
                     int64_t val_begin, int64_t val_end, const std::vector<uint8_t>& skip,
                     std::vector<LeakagePair>* pairs, LeakageReport* report);

}  // namespace epochal::data::internal
