// The transformed kinds of the leakage scan: validation samples that are training samples
// shifted by a few pixels, changed in brightness or contrast, or mirrored left-right (see
// the file comment of include/epochal/data/leakage.h).
//
// Candidates, from two sources:
//   * exact shifts: the central window of every training image (the image less
//     max_shift pixels at each border), as is and mirrored, hashed; a validation image's
//     windows at every shift are looked up. A copy shifted by whole pixels (zero or edge
//     fill, maybe mirrored) matches byte for byte, however many look-alikes it has;
//   * signatures, for everything else (gain/offset, or a shift with other changes): every
//     image gets a 49-number signature that the transforms barely move. Gain and offset:
//     the darkest pixel is subtracted and the signature made zero-mean and unit-length.
//     Shift: the 7 x 7 grid of 4 x 4-pixel cells (on 28 x 28 images; cells scale with the
//     image) is laid around the image's centroid, which moves with the object; where the
//     validation image touches a border (a shift drops or adds content there and the
//     centroid follows only in part), grids one pixel off along that axis are searched
//     too. Mirror: the grid is symmetric about the centroid, so with the signature split
//     into mirror-symmetric (S) and antisymmetric (A) parts, x.y = S.S + A.A and
//     mirror(x).y = S.S - A.A: one 49-long product scores both orientations (S.S + |A.A|).
//     A fused kernel (no stored similarity matrix) keeps each query's best
//     6 * candidates_per_sample training rows above min_similarity; a 14 x 14 signature
//     re-ranks them (dense clusters such as plain shirts defeat 7 x 7 alone) and the best
//     candidates_per_sample are verified.
//
// Verification, on the raw bytes: for each candidate, orientation and shift
// (dx, dy) in [-max_shift, max_shift]^2, gain and offset are fitted by least squares on
// the overlap pixels that are not clipped in the validation image (0 < v < 255), clamped
// to their ranges, and the residual v - clip(gain * t + offset) is measured over the whole
// overlap. A transform passes when that RMSE (pixels on [0, 1]) is below transformed_rmse;
// the pair keeps the simplest passing transform (no mirror before mirror, no shift before
// shift), the lowest RMSE within it.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "leakage_internal.h"

namespace epochal::data::internal {
namespace {

constexpr int kGrid = 7;  // cells per side
constexpr int kSub = 4;   // bilinear samples per cell side
constexpr int kSigDim = kGrid * kGrid;
// The finer signature that re-ranks the coarse candidates: 14 x 14 cells of 2 x 2 pixels.
constexpr int kFineGrid = 14;
constexpr int kFineSub = 2;
constexpr int kFineDim = kFineGrid * kFineGrid;

const uint8_t* Row(const Dataset& ds, int64_t i) {
  return ds.pixels.data() + static_cast<size_t>(i * ds.sample_size());
}

// The signature of `image` into out[0, kSigDim); false (and zeros) for an image without
// contrast. `plane` is scratch of H * W floats.
// The grid is laid around the centroid moved by (offset_x, offset_y) pixels. *touch_x and
// *touch_y (when not null) say whether the image has content (above a quarter of its
// range) within 2 pixels of the left/right or top/bottom border: there a shift drops or
// adds content, and the centroid moves less than the object.
// `grid` x `grid` cells of `sub` x `sub` samples (kGrid, kSub by default).
bool Signature(const uint8_t* image, int64_t channels, int64_t height, int64_t width,
               std::vector<float>* plane, float* out, double offset_x = 0, double offset_y = 0,
               bool* touch_x = nullptr, bool* touch_y = nullptr, int grid = kGrid, int sub = kSub) {
  const int sig_dim = grid * grid;
  const int64_t hw = height * width;
  plane->assign(static_cast<size_t>(hw), 0.0f);
  float* p = plane->data();
  for (int64_t c = 0; c < channels; ++c) {
    const uint8_t* in = image + c * hw;
    for (int64_t k = 0; k < hw; ++k) p[k] += static_cast<float>(in[k]);
  }
  const float lo = *std::min_element(p, p + hw);
  double mass = 0, mx = 0, my = 0;
  for (int64_t y = 0; y < height; ++y) {
    for (int64_t x = 0; x < width; ++x) {
      const float v = p[y * width + x] - lo;
      p[y * width + x] = v;
      mass += v;
      mx += v * static_cast<double>(x);
      my += v * static_cast<double>(y);
    }
  }
  std::fill(out, out + sig_dim, 0.0f);
  if (!(mass > 0)) return false;
  const double cx = mx / mass + offset_x, cy = my / mass + offset_y;
  if (touch_x != nullptr && touch_y != nullptr) {
    const float hi = *std::max_element(p, p + hw) * 0.25f;
    *touch_x = *touch_y = false;
    for (int64_t y = 0; y < height; ++y) {
      for (int64_t x = 0; x < width; ++x) {
        if (p[y * width + x] <= hi) continue;
        if (y < 2 || y >= height - 2) *touch_y = true;
        if (x < 2 || x >= width - 2) *touch_x = true;
      }
    }
  }
  auto at = [&](int64_t y, int64_t x) -> double {
    return y < 0 || y >= height || x < 0 || x >= width ? 0.0 : p[y * width + x];
  };
  auto bilinear = [&](double y, double x) {
    const double fy = std::floor(y), fx = std::floor(x);
    const auto iy = static_cast<int64_t>(fy), ix = static_cast<int64_t>(fx);
    const double wy = y - fy, wx = x - fx;
    return (1 - wy) * ((1 - wx) * at(iy, ix) + wx * at(iy, ix + 1)) +
           wy * ((1 - wx) * at(iy + 1, ix) + wx * at(iy + 1, ix + 1));
  };
  const int steps = grid * sub;
  double sig[kFineDim] = {};
  for (int i = 0; i < steps; ++i) {
    const double y = cy + ((i + 0.5) / steps - 0.5) * static_cast<double>(height);
    for (int j = 0; j < steps; ++j) {
      const double x = cx + ((j + 0.5) / steps - 0.5) * static_cast<double>(width);
      sig[(i / sub) * grid + j / sub] += bilinear(y, x);
    }
  }
  double mean = 0;
  for (int d = 0; d < sig_dim; ++d) mean += sig[d];
  mean /= sig_dim;
  double norm2 = 0;
  for (int d = 0; d < sig_dim; ++d) {
    sig[d] -= mean;
    norm2 += sig[d] * sig[d];
  }
  if (!(norm2 > 0)) return false;
  const double inv = 1 / std::sqrt(norm2);
  for (int d = 0; d < sig_dim; ++d) out[d] = static_cast<float>(sig[d] * inv);
  return true;
}

// The signature split into its mirror-symmetric and antisymmetric parts: with
// S_j = (x_j + x_{6-j}) / sqrt 2 (x_3 itself for the middle column) and
// A_j = (x_j - x_{6-j}) / sqrt 2 per row, x.y = S_x.S_y + A_x.A_y and
// mirror(x).y = S_x.S_y - A_x.A_y, so both orientations cost one 49-long dot product.
constexpr int kHalf = kGrid / 2;              // 3 column pairs
constexpr int kSymDim = kGrid * (kHalf + 1);  // 28
constexpr int kAntiDim = kGrid * kHalf;       // 21
void SplitSignature(const float* x, float* sym, float* anti) {
  const float r = static_cast<float>(1 / std::sqrt(2.0));
  for (int i = 0; i < kGrid; ++i) {
    const float* row = x + i * kGrid;
    for (int j = 0; j < kHalf; ++j) {
      sym[i * (kHalf + 1) + j] = (row[j] + row[kGrid - 1 - j]) * r;
      anti[i * kHalf + j] = (row[j] - row[kGrid - 1 - j]) * r;
    }
    sym[i * (kHalf + 1) + kHalf] = row[kHalf];
  }
}

// The best passing transform of one (training, validation, mirror) triple.
struct Fit {
  bool pass = false;
  int dx = 0, dy = 0;
  double gain = 1, offset = 0, rmse = 0;
};

// Gain/offset fit and residual of one shift over every `step`-th row of the overlap;
// false once the residual's sum of squares reaches `bound_per_pixel` times the pixels
// compared (it stops early).
bool TryShift(const uint8_t* t, const uint8_t* v, int64_t channels, int64_t height, int64_t width,
              int dx, int dy, int64_t step, double bound_per_pixel, const LeakageOptions& o,
              Fit* fit) {
  const int64_t hw = height * width;
  const int64_t y0 = std::max<int64_t>(0, dy), y1 = std::min<int64_t>(height, height + dy);
  const int64_t x0 = std::max<int64_t>(0, dx), x1 = std::min<int64_t>(width, width + dx);
  if (y1 <= y0 || x1 <= x0) return false;
  const int64_t n = channels * ((y1 - y0 + step - 1) / step) * (x1 - x0);
  // Least squares of v on t over the overlap pixels not clipped in v; integer sums.
  int64_t cnt = 0, st = 0, sv = 0, stt = 0, stv = 0;
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t y = y0; y < y1; y += step) {
      const uint8_t* vr = v + c * hw + y * width;
      const uint8_t* tr = t + c * hw + (y - dy) * width - dx;
      int32_t rc = 0, rt = 0, rv = 0, rtt = 0, rtv = 0;
#pragma omp simd reduction(+ : rc, rt, rv, rtt, rtv)
      for (int64_t x = x0; x < x1; ++x) {
        const int32_t vv = vr[x], tt = tr[x];
        const int32_t m = (vv > 0) & (vv < 255);
        rc += m;
        rt += m * tt;
        rv += m * vv;
        rtt += m * tt * tt;
        rtv += m * tt * vv;
      }
      cnt += rc;
      st += rt;
      sv += rv;
      stt += rtt;
      stv += rtv;
    }
  }
  double a = 1, b = 0;
  if (cnt >= 16) {
    const double nc = static_cast<double>(cnt);
    const double dst = static_cast<double>(st), dsv = static_cast<double>(sv);
    const double var = static_cast<double>(stt) - dst * dst / nc;
    const double cov = static_cast<double>(stv) - dst * dsv / nc;
    if (var > 1e-6 * nc) {
      a = std::clamp(cov / var, o.min_gain, o.max_gain);
      b = std::clamp((dsv - a * dst) / nc, -o.max_offset * 255.0, o.max_offset * 255.0);
    }
  }
  // Residual over the overlap, stopped once it cannot pass.
  const double bound = bound_per_pixel * static_cast<double>(n);
  const auto fa = static_cast<float>(a), fb = static_cast<float>(b);
  double sum = 0;
  for (int64_t c = 0; c < channels && sum < bound; ++c) {
    for (int64_t y = y0; y < y1 && sum < bound; y += step) {
      const uint8_t* vr = v + c * hw + y * width;
      const uint8_t* tr = t + c * hw + (y - dy) * width - dx;
      float row = 0;
#pragma omp simd reduction(+ : row)
      for (int64_t x = x0; x < x1; ++x) {
        const float pred = std::clamp(fa * static_cast<float>(tr[x]) + fb, 0.0f, 255.0f);
        const float d = static_cast<float>(vr[x]) - pred;
        row += d * d;
      }
      sum += row;
    }
  }
  if (!(sum < bound)) return false;
  *fit = {true, dx, dy, a, b / 255.0, std::sqrt(sum / static_cast<double>(n)) / 255.0};
  return true;
}

// Verifies `t` (already mirrored when the triple is) against `v` under every shift: the
// identity first, then the shifts (lowest RMSE wins). Each shift is tried on every third
// row with a 4x looser bound before the full check, which rejects most at a third of the
// cost.
Fit BestShift(const uint8_t* t, const uint8_t* v, int64_t channels, int64_t height, int64_t width,
              const LeakageOptions& o) {
  Fit best;
  const int s = o.max_shift;
  const double tol2 = o.transformed_rmse * 255.0 * o.transformed_rmse * 255.0;
  for (int dist = 0; dist <= 2 * s; ++dist) {
    for (int dy = -s; dy <= s; ++dy) {
      for (int dx = -s; dx <= s; ++dx) {
        if (std::abs(dx) + std::abs(dy) != dist) continue;
        Fit fit;
        if (!TryShift(t, v, channels, height, width, dx, dy, 3, 4 * tol2, o, &fit)) continue;
        if (!TryShift(t, v, channels, height, width, dx, dy, 1, tol2, o, &fit)) continue;
        if (!best.pass || fit.rmse < best.rmse) best = fit;
      }
    }
    if (best.pass && dist == 0) break;  // no shift is simpler than none
  }
  return best;
}

// Hash of the window rows [y0, y0 + h), columns [x0, x0 + w) of every channel of `image`,
// mirrored left-right (columns read from x0 + w - 1 down) when `mirror`. 0 for a window
// without contrast, which is never looked up.
uint64_t WindowHash(const uint8_t* image, int64_t channels, int64_t height, int64_t width,
                    int64_t y0, int64_t x0, int64_t h, int64_t w, bool mirror,
                    std::vector<uint8_t>* buffer) {
  buffer->resize(static_cast<size_t>(channels * h * w));
  uint8_t* out = buffer->data();
  uint8_t lo = 255, hi = 0;
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t y = y0; y < y0 + h; ++y) {
      const uint8_t* row = image + (c * height + y) * width + x0;
      for (int64_t x = 0; x < w; ++x) {
        const uint8_t v = row[mirror ? w - 1 - x : x];
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        *out++ = v;
      }
    }
  }
  if (lo == hi) return 0;
  const uint64_t h64 = HashSampleBytes(*buffer);
  return h64 == 0 ? 1 : h64;
}

// The best candidates_per_sample training rows of one query row.
struct TopK {
  float threshold = 0;
  int filled = 0;
  float* sim = nullptr;
  float* anti = nullptr;
  int64_t* index = nullptr;
};

constexpr int kPanel = 16;     // training rows per panel (the kernel's vector width)
constexpr int kQueryRows = 8;  // query rows per kernel call

// Similarities of kQueryRows query rows (qs: [kQueryRows][kSymDim], qa:
// [kQueryRows][kAntiDim]) with `panels` panels of training rows (ps: [panel][kSymDim]
// [kPanel], pa: [panel][kAntiDim][kPanel]; panel p holds training rows
// first + kPanel p ...), S + |A|, fed into each row's TopK. Fused, so that the
// 10k x 60k matrix of similarities is never stored.
__attribute__((target_clones("avx512f", "avx2", "default"))) void SimilarityKernel(
    const float* qs, const float* qa, const float* ps, const float* pa, int64_t panels,
    int64_t first, int k, TopK* tops) {
  for (int64_t p = 0; p < panels; ++p) {
    const float* sp = ps + p * kSymDim * kPanel;
    const float* ap = pa + p * kAntiDim * kPanel;
    float acc_s[kQueryRows][kPanel] = {};
    float acc_a[kQueryRows][kPanel] = {};
    for (int d = 0; d < kSymDim; ++d) {
#pragma GCC unroll 8
      for (int r = 0; r < kQueryRows; ++r) {
        const float x = qs[r * kSymDim + d];
#pragma omp simd
        for (int c = 0; c < kPanel; ++c) acc_s[r][c] += x * sp[d * kPanel + c];
      }
    }
    for (int d = 0; d < kAntiDim; ++d) {
#pragma GCC unroll 8
      for (int r = 0; r < kQueryRows; ++r) {
        const float x = qa[r * kAntiDim + d];
#pragma omp simd
        for (int c = 0; c < kPanel; ++c) acc_a[r][c] += x * ap[d * kPanel + c];
      }
    }
    for (int r = 0; r < kQueryRows; ++r) {
      TopK& top = tops[r];
      int passes = 0;
#pragma omp simd reduction(+ : passes)
      for (int c = 0; c < kPanel; ++c) {
        passes += acc_s[r][c] + std::fabs(acc_a[r][c]) > top.threshold;
      }
      if (passes == 0) continue;
      for (int c = 0; c < kPanel; ++c) {
        const float sim = acc_s[r][c] + std::fabs(acc_a[r][c]);
        if (!(sim > top.threshold)) continue;
        int slot = top.filled;
        if (slot < k) {
          ++top.filled;
        } else {
          slot = static_cast<int>(std::min_element(top.sim, top.sim + k) - top.sim);
        }
        top.sim[slot] = sim;
        top.anti[slot] = acc_a[r][c];
        top.index[slot] = first + p * kPanel + c;
        if (top.filled == k) {
          top.threshold = std::max(top.threshold, *std::min_element(top.sim, top.sim + k));
        }
      }
    }
  }
}

}  // namespace

void ScanTransformed(const Dataset& train, const Dataset& val, const LeakageOptions& options,
                     int64_t val_begin, int64_t val_end, const std::vector<uint8_t>& skip,
                     std::vector<LeakagePair>* pairs, LeakageReport* report) {
  const int64_t num_train = train.size();
  const int64_t C = train.channels, H = train.height, W = train.width;
  const int64_t dim = train.sample_size();
  std::vector<int64_t> samples;  // validation offsets without exact or near twins
  for (int64_t i = 0; i < val_end - val_begin; ++i) {
    if (!skip[i]) samples.push_back(i);
  }
  if (samples.empty() || num_train == 0) return;

  // Training signatures, split, in panels of kPanel rows (the last padded with zeros,
  // similarity 0, never kept).
  const int64_t panels = (num_train + kPanel - 1) / kPanel;
  std::vector<float> train_sym(static_cast<size_t>(panels * kSymDim * kPanel), 0.0f);
  std::vector<float> train_anti(static_cast<size_t>(panels * kAntiDim * kPanel), 0.0f);
#pragma omp parallel
  {
    std::vector<float> plane;
    float sig[kSigDim], sym[kSymDim], anti[kAntiDim];
#pragma omp for schedule(static)
    for (int64_t i = 0; i < num_train; ++i) {
      Signature(Row(train, i), C, H, W, &plane, sig);
      SplitSignature(sig, sym, anti);
      float* ps = train_sym.data() + (i / kPanel) * kSymDim * kPanel + i % kPanel;
      float* pa = train_anti.data() + (i / kPanel) * kAntiDim * kPanel + i % kPanel;
      for (int d = 0; d < kSymDim; ++d) ps[d * kPanel] = sym[d];
      for (int d = 0; d < kAntiDim; ++d) pa[d * kPanel] = anti[d];
    }
  }

  // Exact shifts: the central window of each training image, as is and mirrored, against
  // the windows of each validation image at every shift. A copy shifted by whole pixels
  // (zero or edge fill, maybe mirrored) matches byte for byte there, however similar its
  // neighbours are, which the signatures cannot promise in dense clusters (plain shirts).
  const int64_t m = options.max_shift;
  const bool windows = H > 2 * m && W > 2 * m;
  std::vector<std::pair<uint64_t, int64_t>> window_table;  // (hash, 2 t + mirrored)
  if (windows) {
    window_table.resize(static_cast<size_t>(2 * num_train));
#pragma omp parallel
    {
      std::vector<uint8_t> buffer;
#pragma omp for schedule(static)
      for (int64_t t = 0; t < num_train; ++t) {
        for (int mirror = 0; mirror < 2; ++mirror) {
          window_table[2 * t + mirror] = {
              WindowHash(Row(train, t), C, H, W, m, m, H - 2 * m, W - 2 * m, mirror == 1, &buffer),
              2 * t + mirror};
        }
      }
    }
    std::sort(window_table.begin(), window_table.end());
  }

  // Query rows: each validation sample with its grid at the centroid, plus grids one
  // pixel off along each axis where the sample touches that axis' borders (there the
  // centroid follows a shift only in part).
  std::vector<int64_t> owner;                // query row -> index into samples
  std::vector<std::vector<float>> fine_val;  // per sample, its variants' fine signatures
  std::vector<float> query_sym, query_anti;
  {
    std::vector<std::vector<float>> sym_parts(static_cast<size_t>(samples.size()));
    std::vector<std::vector<float>> anti_parts(static_cast<size_t>(samples.size()));
    fine_val.resize(samples.size());
#pragma omp parallel
    {
      std::vector<float> plane;
      float sig[kSigDim], sym[kSymDim], anti[kAntiDim], fine[kFineDim];
#pragma omp for schedule(static)
      for (size_t i = 0; i < samples.size(); ++i) {
        const uint8_t* image = Row(val, val_begin + samples[i]);
        bool touch_x = false, touch_y = false;
        Signature(image, C, H, W, &plane, sig, 0, 0, &touch_x, &touch_y);
        std::vector<std::pair<double, double>> offsets = {{0, 0}};
        if (touch_y) offsets.insert(offsets.end(), {{0, -1}, {0, 1}});
        if (touch_x) offsets.insert(offsets.end(), {{-1, 0}, {1, 0}});
        for (size_t o = 0; o < offsets.size(); ++o) {
          if (o > 0) Signature(image, C, H, W, &plane, sig, offsets[o].first, offsets[o].second);
          SplitSignature(sig, sym, anti);
          sym_parts[i].insert(sym_parts[i].end(), sym, sym + kSymDim);
          anti_parts[i].insert(anti_parts[i].end(), anti, anti + kAntiDim);
          Signature(image, C, H, W, &plane, fine, offsets[o].first, offsets[o].second, nullptr,
                    nullptr, kFineGrid, kFineSub);
          fine_val[i].insert(fine_val[i].end(), fine, fine + kFineDim);
        }
      }
    }
    for (size_t i = 0; i < samples.size(); ++i) {
      query_sym.insert(query_sym.end(), sym_parts[i].begin(), sym_parts[i].end());
      query_anti.insert(query_anti.end(), anti_parts[i].begin(), anti_parts[i].end());
      owner.insert(owner.end(), sym_parts[i].size() / kSymDim, static_cast<int64_t>(i));
    }
  }
  const auto num_queries = static_cast<int64_t>(owner.size());
  const int64_t groups = (num_queries + kQueryRows - 1) / kQueryRows;
  query_sym.resize(static_cast<size_t>(groups * kQueryRows * kSymDim), 0.0f);
  query_anti.resize(static_cast<size_t>(groups * kQueryRows * kAntiDim), 0.0f);
  // The coarse search keeps 6 times as many candidates as are verified; the fine
  // signature re-ranks them.
  const int k = 6 * options.candidates_per_sample;
  const int64_t rows = groups * kQueryRows;
  std::vector<float> best_sim(static_cast<size_t>(rows * k));
  std::vector<float> best_anti(static_cast<size_t>(rows * k));
  std::vector<int64_t> best_idx(static_cast<size_t>(rows * k));
  std::vector<TopK> tops(static_cast<size_t>(rows));
  for (int64_t q = 0; q < rows; ++q) {
    tops[q] = {static_cast<float>(options.min_similarity), 0, best_sim.data() + q * k,
               best_anti.data() + q * k, best_idx.data() + q * k};
  }
  report->transform_gemm_flops += 2 * rows * panels * kPanel * kSigDim;

  // Chunks of training panels that stay in the L2 cache while every query group meets
  // them.
  constexpr int64_t kChunkPanels = 128;
#pragma omp parallel
  for (int64_t p0 = 0; p0 < panels; p0 += kChunkPanels) {
    const int64_t count = std::min(kChunkPanels, panels - p0);
#pragma omp for schedule(dynamic, 8)
    for (int64_t g = 0; g < groups; ++g) {
      SimilarityKernel(query_sym.data() + g * kQueryRows * kSymDim,
                       query_anti.data() + g * kQueryRows * kAntiDim,
                       train_sym.data() + p0 * kSymDim * kPanel,
                       train_anti.data() + p0 * kAntiDim * kPanel, count, p0 * kPanel, k,
                       tops.data() + g * kQueryRows);
    }
  }

  // Each sample's coarse candidates from all its query rows, re-ranked by the fine
  // signature (best of the sample's variants, as is or mirrored); the best
  // candidates_per_sample are verified, each in the orientation the fine signature
  // prefers. A mirrored pass is checked unmirrored too (a symmetric image), and when the
  // signatures cannot tell the orientations apart both are tried.
  std::vector<int64_t> first_query(samples.size() + 1, num_queries);
  for (int64_t q = num_queries - 1; q >= 0; --q) first_query[owner[q]] = q;
  std::vector<int64_t> fine_slot(static_cast<size_t>(num_train), -1);
  int64_t fine_count = 0;
  for (int64_t q = 0; q < num_queries; ++q) {
    for (int j = 0; j < tops[q].filled; ++j) {
      int64_t& slot = fine_slot[best_idx[q * k + j]];
      if (slot < 0) slot = fine_count++;
    }
  }
  std::vector<int64_t> fine_rows(static_cast<size_t>(fine_count));
  for (int64_t t = 0; t < num_train; ++t) {
    if (fine_slot[t] >= 0) fine_rows[fine_slot[t]] = t;
  }
  std::vector<float> fine_train(static_cast<size_t>(fine_count * kFineDim));
#pragma omp parallel
  {
    std::vector<float> plane;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < fine_count; ++i) {
      Signature(Row(train, fine_rows[i]), C, H, W, &plane, fine_train.data() + i * kFineDim, 0, 0,
                nullptr, nullptr, kFineGrid, kFineSub);
    }
  }
  const int keep = options.candidates_per_sample;
  const int threads = omp_get_max_threads();
  std::vector<std::vector<LeakagePair>> found(static_cast<size_t>(threads));
  std::vector<int64_t> verified(static_cast<size_t>(threads));
#pragma omp parallel
  {
    const int tid = omp_get_thread_num();
    std::vector<uint8_t> mirrored(static_cast<size_t>(dim));
    std::vector<std::pair<int64_t, float>> cands;  // (training index, plain - mirrored)
    std::vector<std::tuple<float, int64_t, float>> scored;
    std::vector<std::pair<int64_t, float>> window_hits;
    std::vector<uint8_t> window_buffer;
#pragma omp for schedule(dynamic, 4)
    for (size_t i = 0; i < samples.size(); ++i) {
      const int64_t v = val_begin + samples[i];
      cands.clear();
      for (int64_t q = first_query[i]; q < first_query[i + 1]; ++q) {
        for (int j = 0; j < tops[q].filled; ++j) cands.push_back({best_idx[q * k + j], 0.0f});
      }
      std::sort(cands.begin(), cands.end(),
                [](const auto& a, const auto& b) { return a.first < b.first; });
      cands.erase(std::unique(cands.begin(), cands.end(),
                              [](const auto& a, const auto& b) { return a.first == b.first; }),
                  cands.end());
      // Window hits, verified first and in their orientation.
      std::vector<std::pair<int64_t, float>>& hits = window_hits;
      hits.clear();
      if (windows) {
        for (int64_t dy = -m; dy <= m; ++dy) {
          for (int64_t dx = -m; dx <= m; ++dx) {
            const uint64_t h = WindowHash(Row(val, v), C, H, W, m + dy, m + dx, H - 2 * m,
                                          W - 2 * m, false, &window_buffer);
            if (h == 0) continue;
            auto it = std::lower_bound(window_table.begin(), window_table.end(),
                                       std::pair<uint64_t, int64_t>{h, 0});
            for (; it != window_table.end() && it->first == h; ++it) {
              hits.push_back({it->second / 2, it->second % 2 == 1 ? -1.0f : 1.0f});
            }
          }
        }
      }
      // (fine score, training index, plain minus mirrored score)
      scored.clear();
      const std::vector<float>& fv = fine_val[i];
      const size_t variants = fv.size() / kFineDim;
      for (const auto& cand : cands) {
        const float* ft = fine_train.data() + fine_slot[cand.first] * kFineDim;
        float plain_best = -2, mirror_best = -2;
        for (size_t o = 0; o < variants; ++o) {
          const float* f = fv.data() + o * kFineDim;
          float plain = 0, mirror = 0;
          for (int y = 0; y < kFineGrid; ++y) {
#pragma omp simd reduction(+ : plain, mirror)
            for (int x = 0; x < kFineGrid; ++x) {
              plain += f[y * kFineGrid + x] * ft[y * kFineGrid + x];
              mirror += f[y * kFineGrid + x] * ft[y * kFineGrid + (kFineGrid - 1 - x)];
            }
          }
          plain_best = std::max(plain_best, plain);
          mirror_best = std::max(mirror_best, mirror);
        }
        scored.push_back({std::max(plain_best, mirror_best), cand.first, plain_best - mirror_best});
      }
      const size_t verify = std::min<size_t>(static_cast<size_t>(keep), scored.size());
      std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(verify),
                        scored.end(), [](const auto& a, const auto& b) {
                          return std::tie(std::get<0>(b), std::get<1>(a)) <
                                 std::tie(std::get<0>(a), std::get<1>(b));
                        });
      cands.clear();
      for (const auto& hit : hits) {
        if (std::none_of(cands.begin(), cands.end(),
                         [&](const auto& c) { return c.first == hit.first; })) {
          cands.push_back(hit);
        }
      }
      for (size_t j = 0; j < verify; ++j) {
        const int64_t t = std::get<1>(scored[j]);
        if (std::none_of(cands.begin(), cands.end(), [&](const auto& c) { return c.first == t; })) {
          cands.push_back({t, std::get<2>(scored[j])});
        }
      }
      verified[tid] += static_cast<int64_t>(cands.size());
      for (const auto& [t, anti] : cands) {
        const uint8_t* plain = Row(train, t);
        for (int64_t cy = 0; cy < C * H; ++cy) {
          const uint8_t* in = plain + cy * W;
          uint8_t* out = mirrored.data() + cy * W;
          for (int64_t x = 0; x < W; ++x) out[x] = in[W - 1 - x];
        }
        const bool ambiguous = std::fabs(anti) < 0.02f;
        Fit best;
        bool best_mirror = false;
        if (anti < 0) {
          best = BestShift(mirrored.data(), Row(val, v), C, H, W, options);
          best_mirror = best.pass;
        }
        if (anti >= 0 || best.pass || ambiguous) {
          const Fit plain_fit = BestShift(plain, Row(val, v), C, H, W, options);
          if (plain_fit.pass || !best.pass) {
            best = plain_fit;
            best_mirror = false;
          }
        }
        if (!best.pass && anti >= 0 && ambiguous) {
          best = BestShift(mirrored.data(), Row(val, v), C, H, W, options);
          best_mirror = best.pass;
        }
        if (!best.pass) continue;
        LeakagePair p;
        p.train_index = t;
        p.val_index = v;
        p.rmse = best.rmse;
        p.label_conflict = train.labels[t] != val.labels[v];
        p.kind = best_mirror                      ? LeakageKind::kMirrored
                 : (best.dx != 0 || best.dy != 0) ? LeakageKind::kShifted
                                                  : LeakageKind::kPhotometric;
        p.mirrored = best_mirror;
        p.dx = best.dx;
        p.dy = best.dy;
        p.gain = best.gain;
        p.offset = best.offset;
        found[tid].push_back(p);
      }
    }
  }
  for (int i = 0; i < threads; ++i) {
    report->transform_candidates += verified[i];
    pairs->insert(pairs->end(), found[i].begin(), found[i].end());
  }
}

}  // namespace epochal::data::internal

namespace epochal::data {

void TransformSample(const Dataset& ds, const LeakagePair& p, bool edge_fill, const uint8_t* in,
                     uint8_t* out) {
  const int64_t C = ds.channels, H = ds.height, W = ds.width;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t x = 0; x < W; ++x) {
        int64_t sy = y - p.dy, sx = x - p.dx;
        double value = 0;
        const bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
        if (inside || edge_fill) {
          sy = std::clamp<int64_t>(sy, 0, H - 1);
          sx = std::clamp<int64_t>(sx, 0, W - 1);
          if (p.mirrored) sx = W - 1 - sx;
          value = p.gain * in[(c * H + sy) * W + sx] + p.offset * 255.0;
        }
        out[(c * H + y) * W + x] = static_cast<uint8_t>(std::clamp(std::lround(value), 0L, 255L));
      }
    }
  }
}

}  // namespace epochal::data
