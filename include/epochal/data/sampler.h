// Epoch order, global batches and their per-rank shards.
//
// The order of epoch `e` is a pure function of (seed, e, n): a Fisher-Yates shuffle whose
// draws come from the counter-based Philox RNG, so every rank computes the same
// permutation without communicating, and a run resumed at epoch e sees the order an
// uninterrupted run would have seen. The permutation is cut into global batches of a
// fixed size; each rank takes a contiguous slice of each global batch (Shard), so the set
// of samples in a step does not depend on the number of ranks.
//
// Thread safety: the free functions are pure. EpochSampler is not synchronised: Shuffle
// must not run concurrently with readers; the const members may be called from any
// number of threads between calls to Shuffle.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace epochal::data {

// The order in which epoch `epoch` visits samples 0..n-1. Position i (from n-1 down to 1)
// is swapped with position j = UniformBelow(w[0], w[1], i + 1), where
// w = Philox4x32(seed, StreamId({RngTag::kShuffle, epoch}), i).
std::vector<int64_t> EpochPermutation(uint64_t seed, int64_t epoch, int64_t n);
// The same, written into `out` (n = out.size()) without allocating.
void FillEpochPermutation(uint64_t seed, int64_t epoch, std::span<int64_t> out);

// Half-open range [begin, end) of positions.
struct IndexRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const IndexRange&) const = default;
};

// The part of [0, size) that `rank` of `world` ranks owns: contiguous, sizes differ by at
// most one (the first size % world ranks get one more), no overlap, nothing left out. When
// size < world the last ranks get empty ranges; they still take part in every collective.
IndexRange ShardRange(int64_t size, int rank, int world);
// `batch` cut the same way.
std::span<const int64_t> Shard(std::span<const int64_t> batch, int rank, int world);

// Cuts one epoch of `n` samples into global batches of `global_batch_size`.
//
// Without drop_last the last batch may be partial (size n % global_batch_size) and every
// sample appears exactly once per epoch. With drop_last every batch is full and the last
// n % global_batch_size positions of the permutation are left out of the epoch; which
// samples those are changes with each epoch's shuffle. dropped() says how many, so the
// caller can log it.
//
// The order starts as the identity (what validation wants); Shuffle(seed, epoch) replaces
// it with EpochPermutation(seed, epoch, n), reusing the buffer.
class EpochSampler {
 public:
  EpochSampler(int64_t n, int64_t global_batch_size, bool drop_last);

  // Uses the order of `epoch` for the batches that follow. Does not allocate.
  void Shuffle(uint64_t seed, int64_t epoch);

  int64_t size() const { return static_cast<int64_t>(order_.size()); }
  int64_t global_batch_size() const { return global_batch_size_; }
  bool drop_last() const { return drop_last_; }
  int64_t num_batches() const { return num_batches_; }
  // Samples left out of each epoch: n % global_batch_size with drop_last, else 0.
  int64_t dropped() const { return dropped_; }
  // Samples visited per epoch: size() - dropped().
  int64_t samples_per_epoch() const { return size() - dropped_; }

  // Positions of batch b (0 <= b < num_batches()) in the epoch order.
  IndexRange BatchRange(int64_t b) const;
  // Sample indices of global batch b.
  std::span<const int64_t> Batch(int64_t b) const;
  // The sample indices `rank` of `world` processes in global batch b.
  std::span<const int64_t> RankBatch(int64_t b, int rank, int world) const {
    return Shard(Batch(b), rank, world);
  }
  // The whole epoch order, including any dropped tail.
  std::span<const int64_t> order() const { return order_; }

 private:
  std::vector<int64_t> order_;
  int64_t global_batch_size_;
  bool drop_last_;
  int64_t num_batches_;
  int64_t dropped_;
};

}  // namespace epochal::data
