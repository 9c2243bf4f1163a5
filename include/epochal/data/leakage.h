// Leakage scan: validation samples that also sit in the training set, exactly, nearly, or
// as a shifted, brightness/contrast-changed or mirrored copy.
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
//   * transformed pairs (leakage_transforms.cc): a validation sample with neither an exact
//     nor a near twin whose pixels are, within LeakageOptions::transformed_rmse, those of a
//     training sample mirrored left-right (or not), shifted by up to max_shift pixels in x
//     and y (only the overlap is compared, so zero and edge fill both match), and mapped
//     through gain * x + offset (gain in [min_gain, max_gain], |offset| <= max_offset,
//     clipped to [0, 1]), gain and offset fitted by least squares. Candidates come from
//     (a) exact hashes of the central window (the image less max_shift pixels at each
//     border): a whole-pixel shift, mirrored or not, copies it byte for byte, and
//     (b) a signature that none of the transforms moves much: the image less its darkest
//     pixel, resampled around its centroid on a 7 x 7 grid of cells (also one pixel off
//     where the image touches a border), made zero-mean and unit-length; each validation
//     sample keeps the 6 * candidates_per_sample training samples whose signatures
//     correlate best with it (as is or mirrored, above min_similarity), re-ranked by a
//     14 x 14 signature down to candidates_per_sample. Every candidate is verified on the
//     raw bytes under every shift, so each pair is a true match of the stated transform.
//     Each pair is labelled with the simplest kind that explains it: mirrored if it needs
//     the mirror, else shifted if it needs a shift, else photometric;
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

  // The transformed kinds (shifted, photometric, mirrored); off, only exact and near.
  bool transforms = true;
  // A transformed pair's per-pixel RMSE on [0, 1], after the best shift, mirror and
  // gain/offset, over the pixels the shifted training image covers, is below this.
  double transformed_rmse = 0.01;
  // Shifts tried in each of x and y: -max_shift..max_shift (0..4).
  int max_shift = 2;
  // Range of the fitted contrast gain and the largest |offset| (pixels on [0, 1]).
  double min_gain = 0.7;
  double max_gain = 1.3;
  double max_offset = 0.25;
  // Tuning of the candidate search (see the file comment); recall, not correctness,
  // depends on these: every reported pair is verified on the raw bytes.
  int candidates_per_sample = 8;
  double min_similarity = 0.9;
};

// What a pair is; a validation sample counts under the simplest kind among its pairs, in
// this order.
enum class LeakageKind : uint8_t { kExact, kNear, kPhotometric, kShifted, kMirrored };
inline constexpr int kLeakageKinds = 5;
// "exact", "near", "photometric", "shifted", "mirrored".
const char* LeakageKindName(LeakageKind kind);
// The inverse of LeakageKindName; false for an unknown name.
bool ParseLeakageKind(const std::string& name, LeakageKind* kind);

// One (training, validation) pair below the threshold; exact twins have rmse 0.
struct LeakagePair {
  int64_t train_index = 0;
  int64_t val_index = 0;
  // Per-pixel RMSE on [0, 1]; for a transformed pair, after the transform, over the
  // pixels the shifted training image covers.
  double rmse = 0;
  bool label_conflict = false;  // the two labels differ
  LeakageKind kind = LeakageKind::kExact;
  // The transform that maps the training image onto the validation one: mirrored
  // left-right if `mirrored`, then shifted right by dx and down by dy pixels, then each
  // pixel p (on [0, 1]) becomes gain * p + offset, clipped to [0, 1]. Identity for exact
  // and near pairs.
  bool mirrored = false;
  int dx = 0;
  int dy = 0;
  double gain = 1;
  double offset = 0;
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

  bool transforms = false;  // whether the transformed kinds were looked for
  double transformed_rmse = 0;
  int max_shift = 0;

  // Validation samples by the simplest kind of twin they have; each sample counts once.
  int64_t exact = 0;            // with a byte-identical training twin
  int64_t near = 0;             // with a near twin but no exact one
  int64_t photometric = 0;      // with a gain/offset-changed twin only
  int64_t shifted = 0;          // with a shifted twin (and maybe gain/offset) only
  int64_t mirrored = 0;         // with a mirrored twin (maybe shifted too) only
  int64_t label_conflicts = 0;  // pairs (of every kind) whose labels differ
  int64_t pair_count = 0;       // all pairs found; pairs.size() is at most max_pairs
  // Pairs below the thresholds, exact ones included (rmse 0), sorted by
  // (val_index, train_index), truncated to max_pairs.
  std::vector<LeakagePair> pairs;

  // Validation samples with a twin of any kind.
  int64_t flagged() const { return exact + near + photometric + shifted + mirrored; }
  // The count of `kind`.
  int64_t count(LeakageKind kind) const;

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
  // The transformed search: signature GEMM work, (validation, training, mirror)
  // candidates verified, and its share of `seconds`.
  int64_t transform_gemm_flops = 0;
  int64_t transform_candidates = 0;
  double transform_seconds = 0;
};

// Scans validation rows [val_begin, val_end) against the whole training set: the pairs of
// every kind and their counts (no split statistics). Throws InputError when the two
// datasets' samples differ in shape or the options are invalid (a threshold negative or
// not finite, max_pairs or a block size below its minimum, a gain range or max_shift out
// of range), Error for a bad range.
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

// The validation set without its flagged samples (those with a pair in report.pairs,
// which must not be truncated: Error if pair_count > pairs.size()), in order; `name`
// names the result.
Dataset WithoutLeakedSamples(const Dataset& val, const LeakageReport& report,
                             const std::string& name);

// Applies `p`'s transform (mirrored, dx, dy, gain, offset; the indices are ignored) to one
// sample of `ds`'s shape: `in` to `out` (sample_size bytes each, not overlapping). The
// pixels a shift uncovers are 0 or, with edge_fill, copies of the nearest edge pixel;
// values are rounded and clipped to [0, 255]. For planting leaks in tests and benchmarks.
void TransformSample(const Dataset& ds, const LeakagePair& p, bool edge_fill, const uint8_t* in,
                     uint8_t* out);

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
