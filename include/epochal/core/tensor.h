// Tensor: an owning, 64-byte-aligned buffer of floats with a logical shape.
// Layout is dense row-major over the shape (NCHW for images). Move-only.
// Thread safety: none; a tensor is owned by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace epochal {

// Dimensions of a tensor, outermost first.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) {}

  int rank() const { return static_cast<int>(dims_.size()); }
  int64_t operator[](int i) const { return dims_[static_cast<size_t>(i)]; }
  int64_t& operator[](int i) { return dims_[static_cast<size_t>(i)]; }
  const std::vector<int64_t>& dims() const { return dims_; }
  // Product of all dimensions (1 for rank 0).
  int64_t NumElements() const;
  // Product of all dimensions but the first: the size of one sample.
  int64_t SampleSize() const;
  bool operator==(const Shape&) const = default;
  // "[32, 1, 28, 28]".
  std::string ToString() const;

 private:
  std::vector<int64_t> dims_;
};

class Tensor {
 public:
  static constexpr size_t kAlignment = 64;

  Tensor() = default;
  // Zero-initialized tensor of `shape`.
  explicit Tensor(Shape shape);
  Tensor(Shape shape, std::initializer_list<float> values);

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  // An explicit deep copy.
  Tensor Clone() const;

  const Shape& shape() const { return shape_; }
  int64_t size() const { return size_; }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float& operator[](int64_t i) { return data_.get()[i]; }
  float operator[](int64_t i) const { return data_.get()[i]; }
  std::span<float> span() { return {data_.get(), static_cast<size_t>(size_)}; }
  std::span<const float> span() const { return {data_.get(), static_cast<size_t>(size_)}; }

  void Fill(float value);
  // Changes the shape without moving data; the element count must not change.
  void Reshape(Shape shape);

 private:
  struct FreeDeleter {
    void operator()(float* p) const;
  };
  Shape shape_;
  int64_t size_ = 0;
  std::unique_ptr<float[], FreeDeleter> data_;
};

}  // namespace epochal
