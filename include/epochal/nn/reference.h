// Reference kernels: every nn layer written as plain nested loops in double precision.
//
// These are the test oracles for the oneDNN layers and for the numeric gradient checks,
// so they favour being obviously correct over being fast: no blocking, no threads, no
// clever indexing. Each layer is a Forward/Backward pair with the same argument order
// (inputs, then outputs as pointers); the shape of every tensor is given beside it.
// All tensors are dense row-major (NCHW for images). Outputs are resized by the callee,
// so a caller may pass empty Arrays. A shape mismatch throws epochal::Error.
// Thread safety: all functions are pure apart from writing their outputs.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "epochal/core/tensor.h"

namespace epochal::nn::ref {

// A dense row-major array of doubles. Copyable on purpose: tests perturb copies.
struct Array {
  std::vector<int64_t> shape;
  std::vector<double> data;

  Array() = default;
  explicit Array(std::vector<int64_t> shape, double fill = 0);

  int64_t size() const { return static_cast<int64_t>(data.size()); }
  int rank() const { return static_cast<int>(shape.size()); }
  int64_t dim(int i) const { return shape[static_cast<size_t>(i)]; }

  double& operator[](int64_t i) { return data[static_cast<size_t>(i)]; }
  double operator[](int64_t i) const { return data[static_cast<size_t>(i)]; }
  // Element [i0, i1] of a rank-2 array.
  double& at(int64_t i0, int64_t i1) { return data[Offset(i0, i1)]; }
  double at(int64_t i0, int64_t i1) const { return data[Offset(i0, i1)]; }
  // Element [i0, i1, i2, i3] of a rank-4 array.
  double& at(int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    return data[Offset(i0, i1, i2, i3)];
  }
  double at(int64_t i0, int64_t i1, int64_t i2, int64_t i3) const {
    return data[Offset(i0, i1, i2, i3)];
  }

 private:
  size_t Offset(int64_t i0, int64_t i1) const { return static_cast<size_t>(i0 * shape[1] + i1); }
  size_t Offset(int64_t i0, int64_t i1, int64_t i2, int64_t i3) const {
    return static_cast<size_t>(((i0 * shape[1] + i1) * shape[2] + i2) * shape[3] + i3);
  }
};

// Conversions to and from the float tensors the oneDNN layers use (same shape, same order).
Array ArrayFromTensor(const Tensor& tensor);
Tensor TensorFromArray(const Array& array);

// Stride and explicit padding of a 2-D convolution. Padding is zeros.
struct ConvGeometry {
  int stride = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
};

// Output spatial size of a conv or pool: (in + pad_lo + pad_hi - kernel) / stride + 1.
int64_t OutputSize(int64_t in, int kernel, int stride, int pad_lo, int pad_hi);

// TensorFlow/Keras "same" padding: out = ceil(in / stride),
// total = max((out - 1) * stride + kernel - in, 0), lo = total / 2, hi = total - lo.
// The extra pixel of an odd total goes at the bottom/right, as in Keras.
std::pair<int, int> SamePadding(int64_t in, int kernel, int stride);
// A ConvGeometry with "same" padding for an in_h x in_w image.
ConvGeometry SameGeometry(int64_t in_h, int64_t in_w, int kernel_h, int kernel_w, int stride);

// Convolution (cross-correlation, as in every deep learning framework).
// src N,C,H,W; weights O,C,KH,KW; bias O or null; dst N,O,OH,OW.
void Conv2DForward(const Array& src, const Array& weights, const Array* bias,
                   const ConvGeometry& geometry, Array* dst);
// diff_dst N,O,OH,OW -> diff_src N,C,H,W, diff_weights O,C,KH,KW, diff_bias O.
// Any of the three outputs may be null.
void Conv2DBackward(const Array& src, const Array& weights, const Array& diff_dst,
                    const ConvGeometry& geometry, Array* diff_src, Array* diff_weights,
                    Array* diff_bias);

// Fully connected. src N,K (or N,C,H,W read as N,K with K = C*H*W); weights O,K; bias O;
// dst N,O.
void DenseForward(const Array& src, const Array& weights, const Array& bias, Array* dst);
// diff_dst N,O -> diff_src (shape of src), diff_weights O,K, diff_bias O. Outputs may be null.
void DenseBackward(const Array& src, const Array& weights, const Array& diff_dst, Array* diff_src,
                   Array* diff_weights, Array* diff_bias);

// dst = max(src, 0), any shape.
void ReluForward(const Array& src, Array* dst);
// diff_src = diff_dst where src > 0, else 0 (the derivative at 0 is taken as 0).
void ReluBackward(const Array& src, const Array& diff_dst, Array* diff_src);

// Max pool with a square window, no padding ("valid"). src N,C,H,W; dst N,C,OH,OW with
// OH = (H - kernel) / stride + 1. Ties go to the first maximum in row-major window order.
void MaxPoolForward(const Array& src, int kernel, int stride, Array* dst);
// Routes each diff_dst element to its window's (first) maximum; overlapping windows add up.
void MaxPoolBackward(const Array& src, int kernel, int stride, const Array& diff_dst,
                     Array* diff_src);

// Batch normalization over channel axis 1. src N,C,H,W or N,C; gamma, beta, mean,
// variance C. dst = gamma * (src - mean) / sqrt(variance + epsilon) + beta.
// Training: mean and (biased, divide by count) variance of the batch, returned in
// mean and variance.
void BatchNormForwardTraining(const Array& src, const Array& gamma, const Array& beta,
                              double epsilon, Array* dst, Array* mean, Array* variance);
// Inference: the given mean and variance.
void BatchNormForwardInference(const Array& src, const Array& gamma, const Array& beta,
                               const Array& mean, const Array& variance, double epsilon,
                               Array* dst);
// Training-mode backward, through the batch statistics: mean and variance are those
// BatchNormForwardTraining returned. diff_src shape of src; diff_gamma, diff_beta C.
// diff_gamma and diff_beta may be null.
void BatchNormBackward(const Array& src, const Array& gamma, const Array& mean,
                       const Array& variance, const Array& diff_dst, double epsilon,
                       Array* diff_src, Array* diff_gamma, Array* diff_beta);

// Inverted dropout with an explicit keep mask of 0s and 1s (shape of src):
// dst = src * mask / (1 - rate). 0 <= rate < 1.
void DropoutForward(const Array& src, const Array& mask, double rate, Array* dst);
// diff_src = diff_dst * mask / (1 - rate).
void DropoutBackward(const Array& mask, double rate, const Array& diff_dst, Array* diff_src);

// Softmax cross-entropy on logits N,K with labels (N values in [0, K)). Returns the mean
// loss over N. diff_logits N,K = (softmax - onehot) / N; probabilities N,K = softmax.
// Both may be null. Stable for large logits (the row maximum is subtracted first).
double SoftmaxCrossEntropy(const Array& logits, const std::vector<int>& labels, Array* diff_logits,
                           Array* probabilities);

}  // namespace epochal::nn::ref
