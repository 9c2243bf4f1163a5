#include "epochal/nn/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>

#include "epochal/core/error.h"

namespace epochal::nn::ref {
namespace {

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Resizes *array to `shape`, filled with zeros.
void Reset(Array* array, std::vector<int64_t> shape) { *array = Array(std::move(shape)); }

// Channel view of a batch norm operand: N,C,H,W or N,C read as N,C,S (S = H*W or 1).
struct ChannelView {
  int64_t n = 0, c = 0, s = 0;
};

ChannelView ChannelsOf(const Array& src) {
  EPOCHAL_CHECK(src.rank() == 2 || src.rank() == 4, "batch norm src must be N,C or N,C,H,W");
  ChannelView v;
  v.n = src.dim(0);
  v.c = src.dim(1);
  v.s = src.rank() == 4 ? src.dim(2) * src.dim(3) : 1;
  return v;
}

void CheckChannelVector(const Array& a, int64_t c, const char* name) {
  EPOCHAL_CHECK(a.rank() == 1 && a.dim(0) == c, name, " must have shape [C]");
}

}  // namespace

Array::Array(std::vector<int64_t> shape_in, double fill)
    : shape(std::move(shape_in)), data(static_cast<size_t>(Product(shape)), fill) {}

Array ArrayFromTensor(const Tensor& tensor) {
  Array array(tensor.shape().dims());
  for (int64_t i = 0; i < array.size(); ++i) array[i] = tensor[i];
  return array;
}

Tensor TensorFromArray(const Array& array) {
  Tensor tensor{Shape(array.shape)};
  for (int64_t i = 0; i < array.size(); ++i) tensor[i] = static_cast<float>(array[i]);
  return tensor;
}

int64_t OutputSize(int64_t in, int kernel, int stride, int pad_lo, int pad_hi) {
  EPOCHAL_CHECK(stride > 0 && kernel > 0, "kernel and stride must be positive");
  EPOCHAL_CHECK(in + pad_lo + pad_hi >= kernel, "window ", kernel, " larger than padded input ",
                in + pad_lo + pad_hi);
  return (in + pad_lo + pad_hi - kernel) / stride + 1;
}

std::pair<int, int> SamePadding(int64_t in, int kernel, int stride) {
  EPOCHAL_CHECK(stride > 0 && kernel > 0 && in > 0, "bad same-padding arguments");
  const int64_t out = (in + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + kernel - in, 0);
  const int lo = static_cast<int>(total / 2);
  const int hi = static_cast<int>(total) - lo;
  return {lo, hi};
}

ConvGeometry SameGeometry(int64_t in_h, int64_t in_w, int kernel_h, int kernel_w, int stride) {
  ConvGeometry g;
  g.stride = stride;
  std::tie(g.pad_top, g.pad_bottom) = SamePadding(in_h, kernel_h, stride);
  std::tie(g.pad_left, g.pad_right) = SamePadding(in_w, kernel_w, stride);
  return g;
}

// ---------------------------------------------------------------------------------------
// Convolution

void Conv2DForward(const Array& src, const Array& weights, const Array* bias, const ConvGeometry& g,
                   Array* dst) {
  // src N,C,H,W; weights O,C,KH,KW; bias O; dst N,O,OH,OW
  EPOCHAL_CHECK(src.rank() == 4 && weights.rank() == 4, "conv src and weights must be 4-D");
  const int64_t n_size = src.dim(0), c_size = src.dim(1), h_size = src.dim(2), w_size = src.dim(3);
  const int64_t o_size = weights.dim(0), kh_size = weights.dim(2), kw_size = weights.dim(3);
  EPOCHAL_CHECK(weights.dim(1) == c_size, "conv weights have ", weights.dim(1),
                " input channels, src has ", c_size);
  if (bias != nullptr) CheckChannelVector(*bias, o_size, "conv bias");
  const int64_t oh_size =
      OutputSize(h_size, static_cast<int>(kh_size), g.stride, g.pad_top, g.pad_bottom);
  const int64_t ow_size =
      OutputSize(w_size, static_cast<int>(kw_size), g.stride, g.pad_left, g.pad_right);
  Reset(dst, {n_size, o_size, oh_size, ow_size});
  for (int64_t n = 0; n < n_size; ++n) {
    for (int64_t o = 0; o < o_size; ++o) {
      for (int64_t oh = 0; oh < oh_size; ++oh) {
        for (int64_t ow = 0; ow < ow_size; ++ow) {
          double sum = bias != nullptr ? (*bias)[o] : 0.0;
          for (int64_t c = 0; c < c_size; ++c) {
            for (int64_t kh = 0; kh < kh_size; ++kh) {
              const int64_t h = oh * g.stride - g.pad_top + kh;
              if (h < 0 || h >= h_size) continue;  // zero padding
              for (int64_t kw = 0; kw < kw_size; ++kw) {
                const int64_t w = ow * g.stride - g.pad_left + kw;
                if (w < 0 || w >= w_size) continue;
                sum += src.at(n, c, h, w) * weights.at(o, c, kh, kw);
              }
            }
          }
          dst->at(n, o, oh, ow) = sum;
        }
      }
    }
  }
}

void Conv2DBackward(const Array& src, const Array& weights, const Array& diff_dst,
                    const ConvGeometry& g, Array* diff_src, Array* diff_weights, Array* diff_bias) {
  // src N,C,H,W; weights O,C,KH,KW; diff_dst N,O,OH,OW
  // -> diff_src N,C,H,W; diff_weights O,C,KH,KW; diff_bias O
  EPOCHAL_CHECK(src.rank() == 4 && weights.rank() == 4 && diff_dst.rank() == 4,
                "conv src, weights and diff_dst must be 4-D");
  const int64_t n_size = src.dim(0), c_size = src.dim(1), h_size = src.dim(2), w_size = src.dim(3);
  const int64_t o_size = weights.dim(0), kh_size = weights.dim(2), kw_size = weights.dim(3);
  EPOCHAL_CHECK(weights.dim(1) == c_size, "conv weights and src disagree on channels");
  const int64_t oh_size =
      OutputSize(h_size, static_cast<int>(kh_size), g.stride, g.pad_top, g.pad_bottom);
  const int64_t ow_size =
      OutputSize(w_size, static_cast<int>(kw_size), g.stride, g.pad_left, g.pad_right);
  EPOCHAL_CHECK(diff_dst.shape == std::vector<int64_t>({n_size, o_size, oh_size, ow_size}),
                "conv diff_dst has the wrong shape");
  Array dsrc(src.shape), dweights(weights.shape), dbias({o_size});
  // Every (n, o, oh, ow, c, kh, kw) term of the forward sum, differentiated.
  for (int64_t n = 0; n < n_size; ++n) {
    for (int64_t o = 0; o < o_size; ++o) {
      for (int64_t oh = 0; oh < oh_size; ++oh) {
        for (int64_t ow = 0; ow < ow_size; ++ow) {
          const double d = diff_dst.at(n, o, oh, ow);
          dbias[o] += d;
          for (int64_t c = 0; c < c_size; ++c) {
            for (int64_t kh = 0; kh < kh_size; ++kh) {
              const int64_t h = oh * g.stride - g.pad_top + kh;
              if (h < 0 || h >= h_size) continue;
              for (int64_t kw = 0; kw < kw_size; ++kw) {
                const int64_t w = ow * g.stride - g.pad_left + kw;
                if (w < 0 || w >= w_size) continue;
                dsrc.at(n, c, h, w) += d * weights.at(o, c, kh, kw);
                dweights.at(o, c, kh, kw) += d * src.at(n, c, h, w);
              }
            }
          }
        }
      }
    }
  }
  if (diff_src != nullptr) *diff_src = std::move(dsrc);
  if (diff_weights != nullptr) *diff_weights = std::move(dweights);
  if (diff_bias != nullptr) *diff_bias = std::move(dbias);
}

// ---------------------------------------------------------------------------------------
// Dense

void DenseForward(const Array& src, const Array& weights, const Array& bias, Array* dst) {
  // src N,K (or N,C,H,W = N,K); weights O,K; bias O; dst N,O
  EPOCHAL_CHECK(src.rank() >= 2 && weights.rank() == 2, "dense src must be N,... and weights O,K");
  const int64_t n_size = src.dim(0), k_size = src.size() / src.dim(0);
  const int64_t o_size = weights.dim(0);
  EPOCHAL_CHECK(weights.dim(1) == k_size, "dense weights expect K=", weights.dim(1),
                ", src has K=", k_size);
  CheckChannelVector(bias, o_size, "dense bias");
  Reset(dst, {n_size, o_size});
  for (int64_t n = 0; n < n_size; ++n) {
    for (int64_t o = 0; o < o_size; ++o) {
      double sum = bias[o];
      for (int64_t k = 0; k < k_size; ++k) sum += src[n * k_size + k] * weights.at(o, k);
      dst->at(n, o) = sum;
    }
  }
}

void DenseBackward(const Array& src, const Array& weights, const Array& diff_dst, Array* diff_src,
                   Array* diff_weights, Array* diff_bias) {
  // src N,K (or N,C,H,W); weights O,K; diff_dst N,O
  // -> diff_src shape of src; diff_weights O,K; diff_bias O
  EPOCHAL_CHECK(src.rank() >= 2 && weights.rank() == 2, "dense src must be N,... and weights O,K");
  const int64_t n_size = src.dim(0), k_size = src.size() / src.dim(0);
  const int64_t o_size = weights.dim(0);
  EPOCHAL_CHECK(weights.dim(1) == k_size, "dense weights and src disagree on K");
  EPOCHAL_CHECK(diff_dst.shape == std::vector<int64_t>({n_size, o_size}),
                "dense diff_dst must be N,O");
  Array dsrc(src.shape), dweights(weights.shape), dbias({o_size});
  for (int64_t n = 0; n < n_size; ++n) {
    for (int64_t o = 0; o < o_size; ++o) {
      const double d = diff_dst.at(n, o);
      dbias[o] += d;
      for (int64_t k = 0; k < k_size; ++k) {
        dsrc[n * k_size + k] += d * weights.at(o, k);
        dweights.at(o, k) += d * src[n * k_size + k];
      }
    }
  }
  if (diff_src != nullptr) *diff_src = std::move(dsrc);
  if (diff_weights != nullptr) *diff_weights = std::move(dweights);
  if (diff_bias != nullptr) *diff_bias = std::move(dbias);
}

// ---------------------------------------------------------------------------------------
// ReLU

void ReluForward(const Array& src, Array* dst) {
  // src any shape; dst same
  Reset(dst, src.shape);
  for (int64_t i = 0; i < src.size(); ++i) (*dst)[i] = src[i] > 0 ? src[i] : 0.0;
}

void ReluBackward(const Array& src, const Array& diff_dst, Array* diff_src) {
  // src, diff_dst, diff_src: same shape
  EPOCHAL_CHECK(diff_dst.shape == src.shape, "relu diff_dst must have the shape of src");
  Reset(diff_src, src.shape);
  for (int64_t i = 0; i < src.size(); ++i) (*diff_src)[i] = src[i] > 0 ? diff_dst[i] : 0.0;
}

// ---------------------------------------------------------------------------------------
// Max pool

namespace {

// Position (h, w) of the first maximum of the window at (oh, ow) of plane (n, c).
std::pair<int64_t, int64_t> ArgMaxInWindow(const Array& src, int64_t n, int64_t c, int64_t oh,
                                           int64_t ow, int kernel, int stride) {
  int64_t best_h = oh * stride, best_w = ow * stride;
  double best = src.at(n, c, best_h, best_w);
  for (int64_t kh = 0; kh < kernel; ++kh) {
    for (int64_t kw = 0; kw < kernel; ++kw) {
      const int64_t h = oh * stride + kh, w = ow * stride + kw;
      if (src.at(n, c, h, w) > best) {  // strict: a tie keeps the earlier position
        best = src.at(n, c, h, w);
        best_h = h;
        best_w = w;
      }
    }
  }
  return {best_h, best_w};
}

}  // namespace

void MaxPoolForward(const Array& src, int kernel, int stride, Array* dst) {
  // src N,C,H,W; dst N,C,OH,OW
  EPOCHAL_CHECK(src.rank() == 4, "max pool src must be N,C,H,W");
  const int64_t n_size = src.dim(0), c_size = src.dim(1);
  const int64_t oh_size = OutputSize(src.dim(2), kernel, stride, 0, 0);
  const int64_t ow_size = OutputSize(src.dim(3), kernel, stride, 0, 0);
  Reset(dst, {n_size, c_size, oh_size, ow_size});
  for (int64_t n = 0; n < n_size; ++n) {
    for (int64_t c = 0; c < c_size; ++c) {
      for (int64_t oh = 0; oh < oh_size; ++oh) {
        for (int64_t ow = 0; ow < ow_size; ++ow) {
          const auto [h, w] = ArgMaxInWindow(src, n, c, oh, ow, kernel, stride);
          dst->at(n, c, oh, ow) = src.at(n, c, h, w);
        }
      }
    }
  }
}

void MaxPoolBackward(const Array& src, int kernel, int stride, const Array& diff_dst,
                     Array* diff_src) {
  // src N,C,H,W; diff_dst N,C,OH,OW; diff_src N,C,H,W
  EPOCHAL_CHECK(src.rank() == 4, "max pool src must be N,C,H,W");
  const int64_t n_size = src.dim(0), c_size = src.dim(1);
  const int64_t oh_size = OutputSize(src.dim(2), kernel, stride, 0, 0);
  const int64_t ow_size = OutputSize(src.dim(3), kernel, stride, 0, 0);
  EPOCHAL_CHECK(diff_dst.shape == std::vector<int64_t>({n_size, c_size, oh_size, ow_size}),
                "max pool diff_dst has the wrong shape");
  Reset(diff_src, src.shape);
  for (int64_t n = 0; n < n_size; ++n) {
    for (int64_t c = 0; c < c_size; ++c) {
      for (int64_t oh = 0; oh < oh_size; ++oh) {
        for (int64_t ow = 0; ow < ow_size; ++ow) {
          const auto [h, w] = ArgMaxInWindow(src, n, c, oh, ow, kernel, stride);
          diff_src->at(n, c, h, w) += diff_dst.at(n, c, oh, ow);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Batch norm. Element (n, c, s) of the N,C,S view lives at (n * C + c) * S + s.

void BatchNormForwardTraining(const Array& src, const Array& gamma, const Array& beta,
                              double epsilon, Array* dst, Array* mean, Array* variance) {
  // src N,C,H,W or N,C; gamma, beta C; dst shape of src; mean, variance C
  const ChannelView v = ChannelsOf(src);
  CheckChannelVector(gamma, v.c, "batch norm gamma");
  CheckChannelVector(beta, v.c, "batch norm beta");
  const double count = static_cast<double>(v.n * v.s);
  Array m({v.c}), var({v.c});
  for (int64_t c = 0; c < v.c; ++c) {
    double sum = 0;
    for (int64_t n = 0; n < v.n; ++n) {
      for (int64_t s = 0; s < v.s; ++s) sum += src[(n * v.c + c) * v.s + s];
    }
    m[c] = sum / count;
    double sq = 0;
    for (int64_t n = 0; n < v.n; ++n) {
      for (int64_t s = 0; s < v.s; ++s) {
        const double x = src[(n * v.c + c) * v.s + s] - m[c];
        sq += x * x;
      }
    }
    var[c] = sq / count;  // biased: divide by the count, as the normalization uses
  }
  BatchNormForwardInference(src, gamma, beta, m, var, epsilon, dst);
  *mean = std::move(m);
  *variance = std::move(var);
}

void BatchNormForwardInference(const Array& src, const Array& gamma, const Array& beta,
                               const Array& mean, const Array& variance, double epsilon,
                               Array* dst) {
  // src N,C,H,W or N,C; gamma, beta, mean, variance C; dst shape of src
  const ChannelView v = ChannelsOf(src);
  CheckChannelVector(gamma, v.c, "batch norm gamma");
  CheckChannelVector(beta, v.c, "batch norm beta");
  CheckChannelVector(mean, v.c, "batch norm mean");
  CheckChannelVector(variance, v.c, "batch norm variance");
  Reset(dst, src.shape);
  for (int64_t n = 0; n < v.n; ++n) {
    for (int64_t c = 0; c < v.c; ++c) {
      const double inv_std = 1.0 / std::sqrt(variance[c] + epsilon);
      for (int64_t s = 0; s < v.s; ++s) {
        const int64_t i = (n * v.c + c) * v.s + s;
        (*dst)[i] = gamma[c] * (src[i] - mean[c]) * inv_std + beta[c];
      }
    }
  }
}

void BatchNormBackward(const Array& src, const Array& gamma, const Array& mean,
                       const Array& variance, const Array& diff_dst, double epsilon,
                       Array* diff_src, Array* diff_gamma, Array* diff_beta) {
  // src N,C,H,W or N,C; gamma, mean, variance C; diff_dst shape of src
  // -> diff_src shape of src; diff_gamma, diff_beta C
  const ChannelView v = ChannelsOf(src);
  CheckChannelVector(gamma, v.c, "batch norm gamma");
  CheckChannelVector(mean, v.c, "batch norm mean");
  CheckChannelVector(variance, v.c, "batch norm variance");
  EPOCHAL_CHECK(diff_dst.shape == src.shape, "batch norm diff_dst must have the shape of src");
  const double count = static_cast<double>(v.n * v.s);
  Array dsrc(src.shape), dgamma({v.c}), dbeta({v.c});
  // With xhat = (x - mean) * inv_std and y = gamma * xhat + beta, and M = count:
  //   dbeta = sum dy, dgamma = sum dy * xhat,
  //   dx = gamma * inv_std / M * (M * dy - dbeta - xhat * dgamma)
  // where the last two terms are the paths through the batch mean and variance.
  for (int64_t c = 0; c < v.c; ++c) {
    const double inv_std = 1.0 / std::sqrt(variance[c] + epsilon);
    for (int64_t n = 0; n < v.n; ++n) {
      for (int64_t s = 0; s < v.s; ++s) {
        const int64_t i = (n * v.c + c) * v.s + s;
        dbeta[c] += diff_dst[i];
        dgamma[c] += diff_dst[i] * (src[i] - mean[c]) * inv_std;
      }
    }
    for (int64_t n = 0; n < v.n; ++n) {
      for (int64_t s = 0; s < v.s; ++s) {
        const int64_t i = (n * v.c + c) * v.s + s;
        const double xhat = (src[i] - mean[c]) * inv_std;
        dsrc[i] = gamma[c] * inv_std / count * (count * diff_dst[i] - dbeta[c] - xhat * dgamma[c]);
      }
    }
  }
  if (diff_src != nullptr) *diff_src = std::move(dsrc);
  if (diff_gamma != nullptr) *diff_gamma = std::move(dgamma);
  if (diff_beta != nullptr) *diff_beta = std::move(dbeta);
}

// ---------------------------------------------------------------------------------------
// Dropout

void DropoutForward(const Array& src, const Array& mask, double rate, Array* dst) {
  // src, mask, dst: same shape
  EPOCHAL_CHECK(mask.shape == src.shape, "dropout mask must have the shape of src");
  EPOCHAL_CHECK(rate >= 0 && rate < 1, "dropout rate must be in [0, 1), got ", rate);
  Reset(dst, src.shape);
  const double scale = 1.0 / (1.0 - rate);
  for (int64_t i = 0; i < src.size(); ++i) (*dst)[i] = src[i] * mask[i] * scale;
}

void DropoutBackward(const Array& mask, double rate, const Array& diff_dst, Array* diff_src) {
  // mask, diff_dst, diff_src: same shape
  EPOCHAL_CHECK(mask.shape == diff_dst.shape, "dropout mask must have the shape of diff_dst");
  EPOCHAL_CHECK(rate >= 0 && rate < 1, "dropout rate must be in [0, 1), got ", rate);
  Reset(diff_src, diff_dst.shape);
  const double scale = 1.0 / (1.0 - rate);
  for (int64_t i = 0; i < diff_dst.size(); ++i) (*diff_src)[i] = diff_dst[i] * mask[i] * scale;
}

// ---------------------------------------------------------------------------------------
// Softmax cross-entropy

double SoftmaxCrossEntropy(const Array& logits, const std::vector<int>& labels, Array* diff_logits,
                           Array* probabilities) {
  // logits N,K; labels N; diff_logits, probabilities N,K
  EPOCHAL_CHECK(logits.rank() == 2, "logits must be N,K");
  const int64_t n_size = logits.dim(0), k_size = logits.dim(1);
  EPOCHAL_CHECK(static_cast<int64_t>(labels.size()) == n_size, "need one label per row");
  Array probs(logits.shape), dlogits(logits.shape);
  double loss_sum = 0;
  for (int64_t n = 0; n < n_size; ++n) {
    const int label = labels[static_cast<size_t>(n)];
    EPOCHAL_CHECK(label >= 0 && label < k_size, "label ", label, " outside [0, ", k_size, ")");
    double row_max = -std::numeric_limits<double>::infinity();
    for (int64_t k = 0; k < k_size; ++k) row_max = std::max(row_max, logits.at(n, k));
    double sum_exp = 0;
    for (int64_t k = 0; k < k_size; ++k) sum_exp += std::exp(logits.at(n, k) - row_max);
    // -log softmax[label] = log sum exp(x - max) - (x[label] - max)
    loss_sum += std::log(sum_exp) - (logits.at(n, label) - row_max);
    for (int64_t k = 0; k < k_size; ++k) {
      probs.at(n, k) = std::exp(logits.at(n, k) - row_max) / sum_exp;
      dlogits.at(n, k) = (probs.at(n, k) - (k == label ? 1.0 : 0.0)) / static_cast<double>(n_size);
    }
  }
  if (diff_logits != nullptr) *diff_logits = std::move(dlogits);
  if (probabilities != nullptr) *probabilities = std::move(probs);
  return loss_sum / static_cast<double>(n_size);
}

}  // namespace epochal::nn::ref
