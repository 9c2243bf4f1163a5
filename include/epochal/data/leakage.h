// Leakage scan: validation samples that also sit in the training set, exactly or nearly.
//
// A validation sample with a byte-identical or near-identical twin in the training set
// is scored on something the model has seen, which pulls the validation loss towards the
// training loss and hides overfitting. The scan finds
//
//   * exact pairs: a 64-bit hash of each sample's raw bytes, every hash match confirmed
//     by memcmp;
//   * near pairs: per-pixel RMSE on [0, 1] below LeakageOptions::near_rmse. Squared
//     distances come from the GEMM identity |a-b|^2 = |a|^2 + |b|^2 - 2 a.b, run as
//     oneDNN f32 matmuls between blocks of validation rows and tiles of training rows.
//     Most pairs are ruled out before the GEMM: each sample becomes a point (p, q) with
//     p = a.u along the unit vector u of the mean training image and q = |a - p u|, and
//     since |a - b| >= |(p_a, q_a) - (p_b, q_b)|, a pair whose points lie farther apart
//     than the radius cannot be near. Validation blocks are compact in that plane (a k-d
//     split), and each meets only the training rows near its bounding box: on
//     Fashion-MNIST (test against train) 5% of the brute-force GEMM remains. Every
//     candidate the f32 GEMM lets through (with a slack that bounds its rounding error)
//     is confirmed on the raw bytes with an exact integer sum of squared differences, so
//     the result has no false positives, and no false negatives within that bound;
//   * duplicates within each split (exact, by hash), and the class balance of the two
//     splits (chi-square test on the 2 x K contingency table of label counts).
//
// The range overload scans a contiguous slice of the validation rows and is what each MPI
// rank runs on its share; MergeInto combines the slices and AddSplitStatistics adds the
// split-level figures once. Nothing here communicates.
//
// Thread safety: the functions are reentrant. ScanLeakage uses every OpenMP thread
// (omp_get_max_threads) and oneDNN's CPU engine; call it from one thread at a time per
// process if the threads are not to be oversubscribed.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "epochal/data/idx.h"

namespace epochal::data {

struct LeakageOptions {
  // A pair is near when its per-pixel RMSE, pixels scaled to [0, 1], is below this
  // (strictly). 0 reports exact duplicates only.
  double near_rmse = 0.01;
  // Pairs kept in LeakageReport::pairs (the first ones in (val_index, train_index)
  // order); the counts always cover every pair.
  int64_t max_pairs = 100000;
  // Tuning only; the result does not depend on these. Validation rows per GEMM block and
  // at most this many training rows per GEMM tile. The scan's buffers take about
  // 8 * (val_block + train_block) * sample_size + 4 * val_block * train_block bytes
  // (32 MB with the defaults on 28x28 images), plus 40 bytes per sample.
  int64_t val_block = 256;
  int64_t train_block = 4096;
  // Skips training rows that the (p, q) bound rules out (see the file comment). Off only
  // to measure what it saves, and in tests.
  bool pruning = true;
};

// One (training, validation) pair below the threshold; exact twins have rmse 0.
struct LeakagePair {
  int64_t train_index = 0;
  int64_t val_index = 0;
  double rmse = 0;
  bool label_conflict = false;  // the two labels differ
  bool operator==(const LeakagePair&) const = default;
};

// Exact duplicates inside one split.
struct SplitDuplicates {
  int64_t exact_duplicate_samples = 0;  // samples with a byte-identical twin earlier in the split
  int64_t groups = 0;                   // distinct images that occur more than once
  bool operator==(const SplitDuplicates&) const = default;
};

// Chi-square test of independence on a 2 x K table (one row per split). Classes that
// neither split holds are left out; with fewer than two classes left, or an empty split,
// the test is degenerate: chi_square 0, p_value 1, degrees_of_freedom 0.
struct ChiSquareResult {
  double chi_square = 0;
  double p_value = 1;
  int degrees_of_freedom = 0;
};

struct LeakageReport {
  // What the scan covered.
  double near_rmse = 0;
  int64_t max_pairs = 0;
  int64_t train_samples = 0;
  int64_t val_scanned = 0;  // validation rows scanned (the range's size)

  int64_t exact = 0;            // validation samples with a byte-identical training twin
  int64_t near = 0;             // validation samples with a near twin but no exact one
  int64_t label_conflicts = 0;  // pairs (exact and near) whose labels differ
  int64_t pair_count = 0;       // all pairs found; pairs.size() is at most max_pairs
  // Pairs below the threshold, exact ones included (rmse 0), sorted by
  // (val_index, train_index), truncated to max_pairs.
  std::vector<LeakagePair> pairs;

  // Split-level figures, filled by the full-split ScanLeakage or AddSplitStatistics;
  // empty class counts mean "not computed".
  SplitDuplicates train_duplicates, val_duplicates;
  std::vector<int64_t> train_class_counts, val_class_counts;
  double chi_square = 0;
  double p_value = 1;
  int degrees_of_freedom = 0;

  // Cost: multiply-adds times two that the GEMMs ran after pruning, candidates the f32
  // test let through to the exact check, wall-clock seconds.
  int64_t gemm_flops = 0;
  int64_t candidates = 0;
  double seconds = 0;
};

// Scans validation rows [val_begin, val_end) against the whole training set: the exact
// and near pairs and their counts (no split statistics). Throws InputError when the two
// datasets' samples differ in shape or the options are invalid (near_rmse negative or
// not finite, max_pairs or a block size below its minimum), Error for a bad range.
LeakageReport ScanLeakage(const Dataset& train, const Dataset& val, const LeakageOptions& options,
                          int64_t val_begin, int64_t val_end);

// The whole scan on one process: every validation row, plus AddSplitStatistics.
LeakageReport ScanLeakage(const Dataset& train, const Dataset& val, const LeakageOptions& options);

// Fills the split-level figures of `report`: duplicates within each split, class counts
// (K = the larger num_classes, widened to cover every label) and the chi-square test.
void AddSplitStatistics(const Dataset& train, const Dataset& val, LeakageReport* report);

// Adds `part`, the report of a validation range disjoint from those already in `total`,
// to `total`: counts add up, pairs are merged in order and truncated to max_pairs,
// seconds is the larger of the two (the parts run side by side). A `total` that has
// scanned nothing yet takes part's near_rmse and max_pairs; otherwise they must agree
// (Error if not). Split-level figures are copied from `part` when `total` has none.
void MergeInto(LeakageReport* total, const LeakageReport& part);

// The report as an indented JSON object: the threshold and sizes, the counts, the pairs
// as [train_index, val_index, rmse, label_conflict], the within-split duplicates, the
// class counts, chi_square, degrees_of_freedom, p_value and seconds.

// Duplicates inside one dataset, by hash of the raw bytes confirmed by memcmp.
SplitDuplicates FindSplitDuplicates(const Dataset& ds);

// Chi-square test of independence between the split (row) and the class (column) on the
// table {a, b}; a and b have the same length.
ChiSquareResult ChiSquareTest(std::span<const int64_t> a, std::span<const int64_t> b);

// P(X > x) for X chi-square distributed with `df` >= 1 degrees of freedom:
// RegularizedGammaQ(df / 2, x / 2). 1 for x <= 0.
double ChiSquareSurvival(double x, int df);

// The regularized upper incomplete gamma function Q(a, x) = Gamma(a, x) / Gamma(a), a > 0,
// x >= 0: a power series for x < a + 1, a continued fraction (modified Lentz) otherwise,
// both to double precision.
double RegularizedGammaQ(double a, double x);

// 64-bit hash of a sample's bytes (not cryptographic; equal bytes give equal hashes).
uint64_t HashSampleBytes(std::span<const uint8_t> bytes);

}  // namespace epochal::data
