#include "epochal/core/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <sstream>

#include "epochal/core/error.h"

namespace epochal {

int64_t Shape::NumElements() const {
  int64_t n = 1;
  for (int64_t d : dims_) n *= d;
  return n;
}

int64_t Shape::SampleSize() const {
  EPOCHAL_CHECK(!dims_.empty());
  int64_t n = 1;
  for (size_t i = 1; i < dims_.size(); ++i) n *= dims_[i];
  return n;
}

std::string Shape::ToString() const {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < dims_.size(); ++i) os << (i ? ", " : "") << dims_[i];
  os << ']';
  return os.str();
}

void Tensor::FreeDeleter::operator()(float* p) const { std::free(p); }

Tensor::Tensor(Shape shape) : shape_(std::move(shape)), size_(shape_.NumElements()) {
  for (int64_t d : shape_.dims())
    EPOCHAL_CHECK(d >= 0, "negative dimension in ", shape_.ToString());
  const size_t bytes = static_cast<size_t>(size_) * sizeof(float);
  const size_t rounded =
      std::max<size_t>(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (p == nullptr) throw std::bad_alloc();
  data_.reset(static_cast<float*>(p));
  Fill(0.0f);
}

Tensor::Tensor(Shape shape, std::initializer_list<float> values) : Tensor(std::move(shape)) {
  EPOCHAL_CHECK(static_cast<int64_t>(values.size()) == size_, "expected ", size_, " values, got ",
                values.size());
  std::copy(values.begin(), values.end(), data_.get());
}

Tensor Tensor::Clone() const {
  Tensor t(shape_);
  std::copy(data(), data() + size_, t.data());
  return t;
}

void Tensor::Fill(float value) { std::fill(data_.get(), data_.get() + size_, value); }

void Tensor::Reshape(Shape shape) {
  EPOCHAL_CHECK(shape.NumElements() == size_, "cannot reshape ", shape_.ToString(), " to ",
                shape.ToString());
  shape_ = std::move(shape);
}

}  // namespace epochal
