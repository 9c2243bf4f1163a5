#include "epochal/data/leakage.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <numeric>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <utility>

#include "epochal/core/error.h"
#include "leakage_internal.h"

namespace epochal::data {
namespace {

using Clock = std::chrono::steady_clock;
using internal::DotProducts;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string ShapeText(const Dataset& ds) {
  return std::to_string(ds.channels) + "x" + std::to_string(ds.height) + "x" +
         std::to_string(ds.width);
}

void Validate(const Dataset& train, const Dataset& val, const LeakageOptions& options) {
  if (train.channels != val.channels || train.height != val.height || train.width != val.width) {
    throw InputError("leakage scan: training samples (" + train.name + ") are " + ShapeText(train) +
                     " but validation samples (" + val.name + ") are " + ShapeText(val));
  }
  if (train.sample_size() <= 0) {
    throw InputError("leakage scan: samples of " + train.name + " have no pixels");
  }
  if (!std::isfinite(options.near_rmse) || options.near_rmse < 0) {
    throw InputError(
        "leakage scan: the near-duplicate RMSE threshold must be finite and >= 0, got " +
        std::to_string(options.near_rmse));
  }
  if (options.max_pairs < 0) {
    throw InputError("leakage scan: max_pairs must be >= 0, got " +
                     std::to_string(options.max_pairs));
  }
  if (!std::isfinite(options.transformed_rmse) || options.transformed_rmse < 0) {
    throw InputError(
        "leakage scan: the transformed-duplicate RMSE threshold must be finite and >= 0, got " +
        std::to_string(options.transformed_rmse));
  }
  if (options.max_shift < 0 || options.max_shift > 4) {
    throw InputError("leakage scan: max_shift must be in [0, 4] pixels, got " +
                     std::to_string(options.max_shift));
  }
  if (!(options.min_gain > 0 && options.min_gain <= 1 && options.max_gain >= 1 &&
        std::isfinite(options.max_gain))) {
    throw InputError(
        "leakage scan: the gain range must satisfy 0 < min_gain <= 1 <= max_gain, got [" +
        std::to_string(options.min_gain) + ", " + std::to_string(options.max_gain) + "]");
  }
  if (!(options.max_offset >= 0 && options.max_offset <= 1)) {
    throw InputError("leakage scan: max_offset must be in [0, 1], got " +
                     std::to_string(options.max_offset));
  }
  if (options.candidates_per_sample < 1 || options.candidates_per_sample > 1024 ||
      !(options.min_similarity >= -1 && options.min_similarity <= 1)) {
    throw InputError(
        "leakage scan: candidates_per_sample must be in [1, 1024] and min_similarity in "
        "[-1, 1], got " +
        std::to_string(options.candidates_per_sample) + " and " +
        std::to_string(options.min_similarity));
  }
  if (options.val_block < 1 || options.train_block < 1) {
    throw InputError("leakage scan: GEMM block sizes must be >= 1, got " +
                     std::to_string(options.val_block) + " and " +
                     std::to_string(options.train_block));
  }
}

// Exact sum of squared differences of two byte rows. Partial sums stay in 32 bits for
// vectorization: 4096 * 255^2 < 2^32.
int64_t SquaredDistance(const uint8_t* a, const uint8_t* b, int64_t n) {
  int64_t total = 0;
  for (int64_t begin = 0; begin < n; begin += 4096) {
    const int64_t end = std::min(n, begin + 4096);
    uint32_t partial = 0;
#pragma omp simd reduction(+ : partial)
    for (int64_t i = begin; i < end; ++i) {
      const int d = static_cast<int>(a[i]) - static_cast<int>(b[i]);
      partial += static_cast<uint32_t>(d * d);
    }
    total += partial;
  }
  return total;
}

int64_t SumOfSquares(const uint8_t* a, int64_t n) {
  int64_t total = 0;
  for (int64_t begin = 0; begin < n; begin += 4096) {
    const int64_t end = std::min(n, begin + 4096);
    uint32_t partial = 0;
#pragma omp simd reduction(+ : partial)
    for (int64_t i = begin; i < end; ++i) partial += static_cast<uint32_t>(a[i]) * a[i];
    total += partial;
  }
  return total;
}

// Tile widths are multiples of this, so a handful of GEMM shapes serve every tile.
constexpr int64_t kWidthStep = 64;

int64_t RoundUp(int64_t n, int64_t step) { return (n + step - 1) / step * step; }

const uint8_t* Row(const Dataset& ds, int64_t i) {
  return ds.pixels.data() + static_cast<size_t>(i * ds.sample_size());
}

// (hash, index) of every sample, sorted: equal images form runs, in index order.
std::vector<std::pair<uint64_t, int64_t>> SortedHashes(const Dataset& ds) {
  const int64_t n = ds.size();
  std::vector<std::pair<uint64_t, int64_t>> entries(static_cast<size_t>(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) entries[i] = {HashSampleBytes(ds.Sample(i)), i};
  std::sort(entries.begin(), entries.end());
  return entries;
}

// Pairs found so far. Holds fewer than 2 * max(max_pairs, 4096) of them (compacting to the
// first max_pairs when full), so a threshold that matches nearly everything does not
// exhaust memory; the counts cover every pair.
class PairCollector {
 public:
  explicit PairCollector(int64_t max_pairs) : max_pairs_(max_pairs) {}

  void Add(const LeakagePair& pair) {
    ++count_;
    if (pair.label_conflict) ++conflicts_;
    if (max_pairs_ == 0) return;
    pairs_.push_back(pair);
    if (static_cast<int64_t>(pairs_.size()) >= 2 * std::max<int64_t>(max_pairs_, 4096)) Compact();
  }

  int64_t count() const { return count_; }
  int64_t conflicts() const { return conflicts_; }

  std::vector<LeakagePair> Finish() {
    Compact();
    std::sort(pairs_.begin(), pairs_.end(), Less);
    return std::move(pairs_);
  }

 private:
  static bool Less(const LeakagePair& a, const LeakagePair& b) {
    return std::tie(a.val_index, a.train_index) < std::tie(b.val_index, b.train_index);
  }
  void Compact() {
    if (static_cast<int64_t>(pairs_.size()) <= max_pairs_) return;
    std::nth_element(pairs_.begin(), pairs_.begin() + max_pairs_, pairs_.end(), Less);
    pairs_.resize(static_cast<size_t>(max_pairs_));
  }

  int64_t max_pairs_;
  int64_t count_ = 0;
  int64_t conflicts_ = 0;
  std::vector<LeakagePair> pairs_;
};

// Two coordinates per sample, pixels on [0, 1]: p = a.u along a unit vector u and
// q = |a - p u|, the length of the rest. For any two samples
//   |a - b|^2 = (p_a - p_b)^2 + |a_perp - b_perp|^2 >= (p_a - p_b)^2 + (q_a - q_b)^2,
// so a pair whose points in the (p, q) plane lie `radius` or more apart cannot be near.
// With u the direction of the mean training image (close to the first principal axis of
// non-negative images), about 0.4% of Fashion-MNIST's test x train pairs pass this test,
// against 4% for the norms alone.
struct PlaneKeys {
  std::vector<double> p, q;
};

std::vector<double> MeanDirection(const Dataset& train) {
  const int64_t dim = train.sample_size();
  std::vector<int64_t> sum(static_cast<size_t>(dim));  // exact, so the same on every rank
#pragma omp parallel
  {
    std::vector<int64_t> mine(static_cast<size_t>(dim));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < train.size(); ++i) {
      const uint8_t* row = Row(train, i);
#pragma omp simd
      for (int64_t k = 0; k < dim; ++k) mine[k] += row[k];
    }
#pragma omp critical
    for (int64_t k = 0; k < dim; ++k) sum[k] += mine[k];
  }
  std::vector<double> u(static_cast<size_t>(dim));
  double norm2 = 0;
  for (int64_t k = 0; k < dim; ++k)
    norm2 += static_cast<double>(sum[k]) * static_cast<double>(sum[k]);
  for (int64_t k = 0; k < dim; ++k) {
    // An all-black training set has no mean direction; any unit vector will do.
    u[k] = norm2 > 0 ? static_cast<double>(sum[k]) / std::sqrt(norm2)
                     : 1 / std::sqrt(static_cast<double>(dim));
  }
  return u;
}

PlaneKeys ComputeKeys(const Dataset& ds, int64_t begin, int64_t end, const std::vector<double>& u) {
  const int64_t dim = ds.sample_size();
  PlaneKeys keys;
  keys.p.resize(static_cast<size_t>(end - begin));
  keys.q.resize(static_cast<size_t>(end - begin));
  const double inv255 = 1.0 / 255.0;
#pragma omp parallel for schedule(static)
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* row = Row(ds, i);
    double p = 0;
#pragma omp simd reduction(+ : p)
    for (int64_t k = 0; k < dim; ++k) p += row[k] * inv255 * u[k];
    // q directly rather than sqrt(|a|^2 - p^2), which cancels badly when q is small.
    double q2 = 0;
#pragma omp simd reduction(+ : q2)
    for (int64_t k = 0; k < dim; ++k) {
      const double rest = row[k] * inv255 - p * u[k];
      q2 += rest * rest;
    }
    keys.p[i - begin] = p;
    keys.q[i - begin] = std::sqrt(q2);
  }
  return keys;
}

// Orders `rows` (validation offsets) so that consecutive runs of `block` rows are compact
// in the (p, q) plane: a k-d split along the wider coordinate at a multiple of `block`, so
// every run but the last is exactly `block` long.
void KdOrder(std::span<int64_t> rows, int64_t block, const PlaneKeys& keys) {
  const auto n = static_cast<int64_t>(rows.size());
  const int64_t blocks = (n + block - 1) / block;
  if (blocks <= 1) return;
  double p_lo = keys.p[rows[0]], p_hi = p_lo, q_lo = keys.q[rows[0]], q_hi = q_lo;
  for (int64_t r : rows) {
    p_lo = std::min(p_lo, keys.p[r]);
    p_hi = std::max(p_hi, keys.p[r]);
    q_lo = std::min(q_lo, keys.q[r]);
    q_hi = std::max(q_hi, keys.q[r]);
  }
  const std::vector<double>& key = p_hi - p_lo >= q_hi - q_lo ? keys.p : keys.q;
  const int64_t left = blocks / 2 * block;
  std::nth_element(rows.begin(), rows.begin() + left, rows.end(),
                   [&](int64_t a, int64_t b) { return std::tie(key[a], a) < std::tie(key[b], b); });
  KdOrder(rows.first(static_cast<size_t>(left)), block, keys);
  KdOrder(rows.subspan(static_cast<size_t>(left)), block, keys);
}

// A candidate the f32 test let through, with its exact squared byte distance.
struct Confirmed {
  int64_t val_offset;  // from val_begin
  int64_t train_index;
  int64_t squared_distance;
};

// Near pairs (squared byte distance > 0 and RMSE below the threshold) between validation
// rows [val_begin, val_end) and all training rows. Sets has_near[v - val_begin].
//
// The validation rows go in blocks of val_block rows that are compact in the (p, q) plane
// (KdOrder). Each block's candidates are the training rows within the pruning radius of
// the block's bounding box in that plane, multiplied with the block in tiles of at most
// train_block rows. The tiles form one pipeline: while the threads test the dot products
// of tile i they also convert the pixels of tile i + 1 (and of its validation block) into
// the other half of double buffers, so each tile costs one GEMM and one parallel region.
void ScanNear(const Dataset& train, const Dataset& val, const LeakageOptions& options,
              int64_t val_begin, int64_t val_end, PairCollector* pairs,
              std::vector<uint8_t>* has_near, LeakageReport* report) {
  const int64_t dim = train.sample_size();
  const int64_t num_train = train.size();
  const int64_t num_val = val_end - val_begin;
  const double inv255 = 1.0 / 255.0;
  // |a - b| on [0, 1] is rmse * sqrt(dim).
  const double radius = options.near_rmse * std::sqrt(static_cast<double>(dim));
  const double radius2 = radius * radius;
  // The margin covers the rounding of the keys (relative 1e-15 of norms up to sqrt(dim)).
  const double prune_radius = radius * (1 + 1e-9) + 1e-9 * std::sqrt(static_cast<double>(dim));

  std::vector<double> train_norm2(static_cast<size_t>(num_train));
  std::vector<double> val_norm2(static_cast<size_t>(num_val));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < num_train; ++i) {
    train_norm2[i] = static_cast<double>(SumOfSquares(Row(train, i), dim)) * inv255 * inv255;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < num_val; ++i) {
    val_norm2[i] =
        static_cast<double>(SumOfSquares(Row(val, val_begin + i), dim)) * inv255 * inv255;
  }

  const int64_t rows = std::min(options.val_block, num_val);
  const int64_t per_tile = std::min(options.train_block, num_train);
  std::vector<int64_t> val_order(static_cast<size_t>(num_val));  // offsets from val_begin
  std::iota(val_order.begin(), val_order.end(), int64_t{0});

  // The schedule: tile k multiplies validation block tiles[k].block (rows
  // val_order[block, block + rows), the last block shifted back to full size) with the
  // training rows tile_rows[first, first + count).
  struct Tile {
    int64_t block, first, count;
  };
  std::vector<Tile> tiles;
  std::vector<int64_t> tile_rows;
  auto add_tiles = [&](int64_t block, int64_t first) {
    const auto end = static_cast<int64_t>(tile_rows.size());
    for (int64_t t = first; t < end; t += per_tile) {
      tiles.push_back({block, t, std::min(per_tile, end - t)});
    }
  };
  if (options.pruning) {
    const std::vector<double> u = MeanDirection(train);
    const PlaneKeys train_keys = ComputeKeys(train, 0, num_train, u);
    const PlaneKeys val_keys = ComputeKeys(val, val_begin, val_end, u);
    // Training rows in order of p, with their keys in that order.
    std::vector<int64_t> by_p(static_cast<size_t>(num_train));
    std::iota(by_p.begin(), by_p.end(), int64_t{0});
    std::sort(by_p.begin(), by_p.end(), [&](int64_t a, int64_t b) {
      return std::tie(train_keys.p[a], a) < std::tie(train_keys.p[b], b);
    });
    std::vector<double> train_p(static_cast<size_t>(num_train));
    std::vector<double> train_q(static_cast<size_t>(num_train));
    for (int64_t i = 0; i < num_train; ++i) {
      train_p[i] = train_keys.p[by_p[i]];
      train_q[i] = train_keys.q[by_p[i]];
    }
    KdOrder(val_order, rows, val_keys);
    for (int64_t block = 0; block < num_val; block += rows) {
      double p_lo = val_keys.p[val_order[block]], p_hi = p_lo;
      double q_lo = val_keys.q[val_order[block]], q_hi = q_lo;
      for (int64_t i = block; i < std::min(block + rows, num_val); ++i) {
        const int64_t v = val_order[i];
        p_lo = std::min(p_lo, val_keys.p[v]);
        p_hi = std::max(p_hi, val_keys.p[v]);
        q_lo = std::min(q_lo, val_keys.q[v]);
        q_hi = std::max(q_hi, val_keys.q[v]);
      }
      const int64_t first = static_cast<int64_t>(tile_rows.size());
      const auto lo =
          std::lower_bound(train_p.begin(), train_p.end(), p_lo - prune_radius) - train_p.begin();
      const auto hi =
          std::upper_bound(train_p.begin(), train_p.end(), p_hi + prune_radius) - train_p.begin();
      for (int64_t i = lo; i < hi; ++i) {
        // Distance from the training point to the block's bounding box.
        const double dp = std::max({0.0, p_lo - train_p[i], train_p[i] - p_hi});
        const double dq = std::max({0.0, q_lo - train_q[i], train_q[i] - q_hi});
        if (dp * dp + dq * dq <= prune_radius * prune_radius) tile_rows.push_back(by_p[i]);
      }
      add_tiles(block, first);
    }
  } else {
    tile_rows.resize(static_cast<size_t>(num_train));
    std::iota(tile_rows.begin(), tile_rows.end(), int64_t{0});
    for (int64_t block = 0; block < num_val; block += rows) add_tiles(block, 0);
  }
  if (tiles.empty()) return;

  // The f32 test lets a pair through when the GEMM's squared distance is below
  // radius2 + slack * (|a|^2 + |b|^2). Any summation order of a dim-term dot product of
  // non-negative terms errs by at most about dim * u * a.b <= dim * u * (|a|^2 + |b|^2) / 2
  // (u = 2^-24); the factor 4 and the + 8 also cover the rounding of the pixels, the
  // norms and the test itself. Everything let through is confirmed exactly.
  // Pass when 2 a.b > (1 - slack) (|a|^2 + |b|^2) - radius2 = row_bias + col_bias.
  const double slack = 4.0 * static_cast<double>(dim + 8) * std::numeric_limits<float>::epsilon();
  const float scale = 1.0f / 255.0f;
  const int64_t max_width = RoundUp(per_tile, kWidthStep);
  DotProducts gemm(rows, dim, max_width);
  // Double buffers: [0] and [1] alternate between tiles (weights) and blocks (src).
  std::vector<float> src[2], row_bias[2], weights[2], col_bias[2];
  for (int i = 0; i < 2; ++i) {
    src[i].resize(static_cast<size_t>(rows * dim));
    row_bias[i].resize(static_cast<size_t>(rows));
    weights[i].resize(static_cast<size_t>(max_width * dim));
    col_bias[i].resize(static_cast<size_t>(max_width));
  }
  auto row_start = [&](int64_t block) { return std::min(block, num_val - rows); };
  // Worksharing loops for use inside a parallel region.
  auto convert_block = [&](int64_t block, int slot) {
    const int64_t start = row_start(block);
#pragma omp for schedule(static) nowait
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t v = val_order[start + r];
      const uint8_t* in = Row(val, val_begin + v);
      float* out = src[slot].data() + r * dim;
#pragma omp simd
      for (int64_t k = 0; k < dim; ++k) out[k] = static_cast<float>(in[k]) * scale;
      row_bias[slot][r] = static_cast<float>((1 - slack) * val_norm2[v] - radius2);
    }
  };
  // Columns past `count` keep stale pixels; their dot products are never read.
  auto convert_tile = [&](const Tile& tile, int slot) {
#pragma omp for schedule(static) nowait
    for (int64_t c = 0; c < tile.count; ++c) {
      const int64_t t = tile_rows[tile.first + c];
      const uint8_t* in = Row(train, t);
      float* out = weights[slot].data() + c * dim;
#pragma omp simd
      for (int64_t k = 0; k < dim; ++k) out[k] = static_cast<float>(in[k]) * scale;
      col_bias[slot][c] = static_cast<float>((1 - slack) * train_norm2[t]);
    }
  };
  std::vector<std::vector<Confirmed>> found(static_cast<size_t>(omp_get_max_threads()));
  auto test_tile = [&](const Tile& tile, int64_t width, int block_slot, int tile_slot) {
    const int64_t start = row_start(tile.block);
    const int64_t r_lo = tile.block - start;
    const int64_t r_hi = std::min(tile.block + rows, num_val) - start;
    const float* dst = gemm.dst();
    const float* cb = col_bias[tile_slot].data();
    std::vector<Confirmed>& mine = found[static_cast<size_t>(omp_get_thread_num())];
#pragma omp for schedule(static) nowait
    for (int64_t r = r_lo; r < r_hi; ++r) {
      const float* dots = dst + r * width;
      const float rb = row_bias[block_slot][r];
      // Nearly every test fails: look for a pass in a chunk (vectorized) first.
      for (int64_t c0 = 0; c0 < tile.count; c0 += 64) {
        const int64_t c1 = std::min(tile.count, c0 + 64);
        int passes = 0;
#pragma omp simd reduction(+ : passes)
        for (int64_t c = c0; c < c1; ++c) passes += 2.0f * dots[c] > rb + cb[c];
        if (passes == 0) continue;
        for (int64_t c = c0; c < c1; ++c) {
          if (!(2.0f * dots[c] > rb + cb[c])) continue;
          const int64_t v = val_order[start + r];
          const int64_t t = tile_rows[tile.first + c];
          mine.push_back({v, t, SquaredDistance(Row(val, val_begin + v), Row(train, t), dim)});
        }
      }
    }
  };

  int block_slot = 0;
#pragma omp parallel
  {
    convert_block(tiles[0].block, 0);
    convert_tile(tiles[0], 0);
  }
  for (size_t i = 0; i < tiles.size(); ++i) {
    const Tile& tile = tiles[i];
    const int tile_slot = static_cast<int>(i % 2);
    const int64_t width = RoundUp(tile.count, kWidthStep);
    gemm.Run(width, src[block_slot].data(), weights[tile_slot].data());
    report->gemm_flops += 2 * rows * width * dim;
    const bool more = i + 1 < tiles.size();
    const bool new_block = more && tiles[i + 1].block != tile.block;
#pragma omp parallel
    {
      test_tile(tile, width, block_slot, tile_slot);
      if (new_block) convert_block(tiles[i + 1].block, 1 - block_slot);
      if (more) convert_tile(tiles[i + 1], 1 - tile_slot);
    }
    if (new_block) block_slot = 1 - block_slot;
    for (auto& list : found) {
      report->candidates += static_cast<int64_t>(list.size());
      for (const Confirmed& f : list) {
        // Byte-identical pairs come from the exact (hash) pass.
        if (f.squared_distance == 0) continue;
        const double rmse =
            std::sqrt(static_cast<double>(f.squared_distance) / static_cast<double>(dim)) * inv255;
        if (!(rmse < options.near_rmse)) continue;
        const int64_t v = val_begin + f.val_offset;
        LeakagePair pair{f.train_index, v, rmse, train.labels[f.train_index] != val.labels[v]};
        pair.kind = LeakageKind::kNear;
        pairs->Add(pair);
        (*has_near)[f.val_offset] = 1;
      }
      list.clear();
    }
  }
}

}  // namespace

uint64_t HashSampleBytes(std::span<const uint8_t> bytes) {
  // Word-at-a-time multiply-rotate with a murmur3 finalizer: fast, and any change of a
  // byte changes the hash with overwhelming probability; memcmp settles the rest.
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  auto mix = [](uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
  };
  uint64_t h = kMul ^ static_cast<uint64_t>(bytes.size());
  const uint8_t* p = bytes.data();
  size_t n = bytes.size();
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = std::rotl((h ^ w) * kMul, 29);
    p += 8;
    n -= 8;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p, n);
  h = std::rotl((h ^ tail ^ (static_cast<uint64_t>(n) << 56)) * kMul, 29);
  return mix(h);
}

LeakageReport ScanLeakage(const Dataset& train, const Dataset& val, const LeakageOptions& options,
                          int64_t val_begin, int64_t val_end) {
  const auto start = Clock::now();
  Validate(train, val, options);
  EPOCHAL_CHECK(0 <= val_begin && val_begin <= val_end && val_end <= val.size(),
                "validation range [", val_begin, ", ", val_end, ") of ", val.size(), " samples");
  LeakageReport report;
  report.near_rmse = options.near_rmse;
  report.max_pairs = options.max_pairs;
  report.transforms = options.transforms;
  report.transformed_rmse = options.transforms ? options.transformed_rmse : 0;
  report.max_shift = options.transforms ? options.max_shift : 0;
  report.train_samples = train.size();
  report.val_scanned = val_end - val_begin;
  const int64_t num_val = val_end - val_begin;
  const int64_t dim = train.sample_size();
  PairCollector pairs(options.max_pairs);
  std::vector<uint8_t> has_exact(static_cast<size_t>(num_val));
  std::vector<uint8_t> has_near(static_cast<size_t>(num_val));

  if (num_val > 0 && train.size() > 0) {
    const auto train_hashes = SortedHashes(train);
    for (int64_t v = val_begin; v < val_end; ++v) {
      const uint64_t h = HashSampleBytes(val.Sample(v));
      auto it = std::lower_bound(train_hashes.begin(), train_hashes.end(),
                                 std::pair<uint64_t, int64_t>{h, 0});
      for (; it != train_hashes.end() && it->first == h; ++it) {
        const int64_t t = it->second;
        if (std::memcmp(Row(train, t), Row(val, v), static_cast<size_t>(dim)) != 0) continue;
        pairs.Add({t, v, 0.0, train.labels[t] != val.labels[v]});
        has_exact[v - val_begin] = 1;
      }
    }
    if (options.near_rmse > 0) {
      ScanNear(train, val, options, val_begin, val_end, &pairs, &has_near, &report);
    }
  }
  // The simplest kind each validation sample has, kLeakageKinds for none.
  std::vector<uint8_t> kind(static_cast<size_t>(num_val), kLeakageKinds);
  for (int64_t i = 0; i < num_val; ++i) {
    if (has_exact[i]) {
      kind[i] = static_cast<uint8_t>(LeakageKind::kExact);
    } else if (has_near[i]) {
      kind[i] = static_cast<uint8_t>(LeakageKind::kNear);
    }
  }
  if (options.transforms && options.transformed_rmse > 0 && num_val > 0 && train.size() > 0) {
    const auto transform_start = Clock::now();
    std::vector<uint8_t> skip(static_cast<size_t>(num_val));
    for (int64_t i = 0; i < num_val; ++i) skip[i] = has_exact[i] || has_near[i];
    std::vector<LeakagePair> transformed;
    internal::ScanTransformed(train, val, options, val_begin, val_end, skip, &transformed, &report);
    for (const LeakagePair& p : transformed) {
      pairs.Add(p);
      uint8_t& k = kind[p.val_index - val_begin];
      k = std::min(k, static_cast<uint8_t>(p.kind));
    }
    report.transform_seconds = SecondsSince(transform_start);
  }
  for (int64_t i = 0; i < num_val; ++i) {
    switch (kind[i]) {
      case static_cast<uint8_t>(LeakageKind::kExact):
        ++report.exact;
        break;
      case static_cast<uint8_t>(LeakageKind::kNear):
        ++report.near;
        break;
      case static_cast<uint8_t>(LeakageKind::kPhotometric):
        ++report.photometric;
        break;
      case static_cast<uint8_t>(LeakageKind::kShifted):
        ++report.shifted;
        break;
      case static_cast<uint8_t>(LeakageKind::kMirrored):
        ++report.mirrored;
        break;
      default:
        break;
    }
  }
  report.pair_count = pairs.count();
  report.label_conflicts = pairs.conflicts();
  report.pairs = pairs.Finish();
  report.seconds = SecondsSince(start);
  return report;
}

LeakageReport ScanLeakage(const Dataset& train, const Dataset& val, const LeakageOptions& options) {
  const auto start = Clock::now();
  LeakageReport report = ScanLeakage(train, val, options, 0, val.size());
  AddSplitStatistics(train, val, &report);
  report.seconds = SecondsSince(start);
  return report;
}

void AddSplitStatistics(const Dataset& train, const Dataset& val, LeakageReport* report) {
  int num_classes = std::max(train.num_classes, val.num_classes);
  for (const Dataset* ds : {&train, &val}) {
    for (uint8_t label : ds->labels) num_classes = std::max(num_classes, label + 1);
  }
  report->train_class_counts.assign(static_cast<size_t>(num_classes), 0);
  report->val_class_counts.assign(static_cast<size_t>(num_classes), 0);
  for (uint8_t label : train.labels) ++report->train_class_counts[label];
  for (uint8_t label : val.labels) ++report->val_class_counts[label];
  const ChiSquareResult chi = ChiSquareTest(report->train_class_counts, report->val_class_counts);
  report->chi_square = chi.chi_square;
  report->p_value = chi.p_value;
  report->degrees_of_freedom = chi.degrees_of_freedom;
  report->train_duplicates = FindSplitDuplicates(train);
  report->val_duplicates = FindSplitDuplicates(val);
}

void MergeInto(LeakageReport* total, const LeakageReport& part) {
  if (total->val_scanned == 0 && total->pairs.empty() && total->pair_count == 0) {
    total->near_rmse = part.near_rmse;
    total->max_pairs = part.max_pairs;
    total->transforms = part.transforms;
    total->transformed_rmse = part.transformed_rmse;
    total->max_shift = part.max_shift;
    total->train_samples = std::max(total->train_samples, part.train_samples);
  } else if (part.val_scanned > 0) {
    EPOCHAL_CHECK(total->near_rmse == part.near_rmse && total->max_pairs == part.max_pairs &&
                      total->transforms == part.transforms &&
                      total->transformed_rmse == part.transformed_rmse &&
                      total->max_shift == part.max_shift &&
                      total->train_samples == part.train_samples,
                  "merging leakage reports of different scans");
  }
  total->val_scanned += part.val_scanned;
  total->exact += part.exact;
  total->near += part.near;
  total->photometric += part.photometric;
  total->shifted += part.shifted;
  total->mirrored += part.mirrored;
  total->label_conflicts += part.label_conflicts;
  total->pair_count += part.pair_count;
  total->gemm_flops += part.gemm_flops;
  total->candidates += part.candidates;
  total->seconds = std::max(total->seconds, part.seconds);
  total->transform_gemm_flops += part.transform_gemm_flops;
  total->transform_candidates += part.transform_candidates;
  total->transform_seconds = std::max(total->transform_seconds, part.transform_seconds);

  std::vector<LeakagePair> merged;
  merged.reserve(total->pairs.size() + part.pairs.size());
  auto less = [](const LeakagePair& a, const LeakagePair& b) {
    return std::tie(a.val_index, a.train_index) < std::tie(b.val_index, b.train_index);
  };
  std::merge(total->pairs.begin(), total->pairs.end(), part.pairs.begin(), part.pairs.end(),
             std::back_inserter(merged), less);
  if (static_cast<int64_t>(merged.size()) > total->max_pairs) {
    merged.resize(static_cast<size_t>(total->max_pairs));
  }
  total->pairs = std::move(merged);

  if (total->train_class_counts.empty() && !part.train_class_counts.empty()) {
    total->train_duplicates = part.train_duplicates;
    total->val_duplicates = part.val_duplicates;
    total->train_class_counts = part.train_class_counts;
    total->val_class_counts = part.val_class_counts;
    total->chi_square = part.chi_square;
    total->p_value = part.p_value;
    total->degrees_of_freedom = part.degrees_of_freedom;
  }
}

const char* LeakageKindName(LeakageKind kind) {
  switch (kind) {
    case LeakageKind::kExact:
      return "exact";
    case LeakageKind::kNear:
      return "near";
    case LeakageKind::kPhotometric:
      return "photometric";
    case LeakageKind::kShifted:
      return "shifted";
    case LeakageKind::kMirrored:
      return "mirrored";
  }
  return "unknown";
}

bool ParseLeakageKind(const std::string& name, LeakageKind* kind) {
  for (int i = 0; i < kLeakageKinds; ++i) {
    const auto k = static_cast<LeakageKind>(i);
    if (name == LeakageKindName(k)) {
      *kind = k;
      return true;
    }
  }
  return false;
}

int64_t LeakageReport::count(LeakageKind kind) const {
  switch (kind) {
    case LeakageKind::kExact:
      return exact;
    case LeakageKind::kNear:
      return near;
    case LeakageKind::kPhotometric:
      return photometric;
    case LeakageKind::kShifted:
      return shifted;
    case LeakageKind::kMirrored:
      return mirrored;
  }
  return 0;
}

Dataset WithoutLeakedSamples(const Dataset& val, const LeakageReport& report,
                             const std::string& name) {
  EPOCHAL_CHECK(report.pair_count == static_cast<int64_t>(report.pairs.size()),
                "the leakage report keeps ", report.pairs.size(), " of its ", report.pair_count,
                " pairs; raise max_pairs to remove every flagged sample");
  std::vector<uint8_t> drop(static_cast<size_t>(val.size()));
  for (const LeakagePair& p : report.pairs) {
    EPOCHAL_CHECK(p.val_index >= 0 && p.val_index < val.size(), "pair with validation index ",
                  p.val_index, " of ", val.size());
    drop[p.val_index] = 1;
  }
  Dataset out;
  out.name = name;
  out.channels = val.channels;
  out.height = val.height;
  out.width = val.width;
  out.num_classes = val.num_classes;
  const auto dim = static_cast<size_t>(val.sample_size());
  for (int64_t i = 0; i < val.size(); ++i) {
    if (drop[i]) continue;
    const auto sample = val.Sample(i);
    out.pixels.insert(out.pixels.end(), sample.begin(), sample.begin() + dim);
    out.labels.push_back(val.labels[i]);
  }
  return out;
}

SplitDuplicates FindSplitDuplicates(const Dataset& ds) {
  const auto entries = SortedHashes(ds);
  const auto dim = static_cast<size_t>(ds.sample_size());
  SplitDuplicates d;
  // Within one hash run, distinct images (a hash collision) get a representative each.
  std::vector<std::pair<int64_t, int64_t>> groups;  // (first index, members)
  for (size_t i = 0; i < entries.size();) {
    size_t j = i + 1;
    while (j < entries.size() && entries[j].first == entries[i].first) ++j;
    if (j - i > 1) {
      groups.clear();
      for (size_t k = i; k < j; ++k) {
        const int64_t idx = entries[k].second;
        auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& group) {
          return std::memcmp(Row(ds, group.first), Row(ds, idx), dim) == 0;
        });
        if (g == groups.end()) {
          groups.push_back({idx, 1});
        } else {
          ++g->second;
        }
      }
      for (const auto& [first, members] : groups) {
        if (members < 2) continue;
        ++d.groups;
        d.exact_duplicate_samples += members - 1;
      }
    }
    i = j;
  }
  return d;
}

ChiSquareResult ChiSquareTest(std::span<const int64_t> a, std::span<const int64_t> b) {
  EPOCHAL_CHECK(a.size() == b.size(), "contingency rows of ", a.size(), " and ", b.size(),
                " classes");
  const double total_a = static_cast<double>(std::accumulate(a.begin(), a.end(), int64_t{0}));
  const double total_b = static_cast<double>(std::accumulate(b.begin(), b.end(), int64_t{0}));
  const double total = total_a + total_b;
  int used = 0;
  double chi2 = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    const double column = static_cast<double>(a[k] + b[k]);
    if (column == 0) continue;
    ++used;
    if (total_a == 0 || total_b == 0) continue;
    const double expected_a = total_a * column / total;
    const double expected_b = total_b * column / total;
    const double da = static_cast<double>(a[k]) - expected_a;
    const double db = static_cast<double>(b[k]) - expected_b;
    chi2 += da * da / expected_a + db * db / expected_b;
  }
  ChiSquareResult result;
  if (total_a == 0 || total_b == 0 || used < 2) return result;
  result.chi_square = chi2;
  result.degrees_of_freedom = used - 1;
  result.p_value = ChiSquareSurvival(chi2, result.degrees_of_freedom);
  return result;
}

double ChiSquareSurvival(double x, int df) {
  EPOCHAL_CHECK(df >= 1, "chi-square degrees of freedom ", df);
  if (!(x > 0)) return 1.0;
  return RegularizedGammaQ(0.5 * df, 0.5 * x);
}

double RegularizedGammaQ(double a, double x) {
  EPOCHAL_CHECK(a > 0 && x >= 0, "RegularizedGammaQ(", a, ", ", x, ")");
  if (x == 0) return 1.0;
  if (std::isinf(x)) return 0.0;
  constexpr double kEps = std::numeric_limits<double>::epsilon();
  constexpr int kMaxIterations = 100000;
  // x^a e^-x / Gamma(a), in logs to stay finite for large a and x.
  const double front = std::exp(a * std::log(x) - x - std::lgamma(a));
  if (x < a + 1) {
    // P(a, x) = front * sum_n x^n / (a (a+1) ... (a+n)); converges fast for x < a + 1.
    double term = 1.0 / a;
    double sum = term;
    double ap = a;
    for (int n = 0; n < kMaxIterations; ++n) {
      ap += 1;
      term *= x / ap;
      sum += term;
      if (std::fabs(term) < std::fabs(sum) * kEps) break;
    }
    return std::max(0.0, 1.0 - sum * front);
  }
  // Q(a, x) = front / (x + 1 - a - 1 (1 - a) / (x + 3 - a - 2 (2 - a) / (x + 5 - a - ...))),
  // evaluated with the modified Lentz method.
  constexpr double kTiny = std::numeric_limits<double>::min() / kEps;
  double b = x + 1 - a;
  double c = 1 / kTiny;
  double d = 1 / b;
  double h = d;
  for (int i = 1; i < kMaxIterations; ++i) {
    const double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = b + an / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1) < kEps) break;
  }
  return std::min(1.0, front * h);
}

}  // namespace epochal::data
