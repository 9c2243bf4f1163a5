#include "epochal/data/sampler.h"

#include <algorithm>
#include <array>
#include <numeric>
#include <utility>

#include "epochal/core/error.h"
#include "epochal/core/rng.h"

namespace epochal::data {

void FillEpochPermutation(uint64_t seed, int64_t epoch, std::span<int64_t> out) {
  std::iota(out.begin(), out.end(), int64_t{0});
  const uint64_t stream =
      StreamId({static_cast<uint64_t>(RngTag::kShuffle), static_cast<uint64_t>(epoch)});
  for (size_t i = out.size(); i-- > 1;) {
    // One Philox block per position keeps each swap independent of the others, so the
    // shuffle can be checked (or recomputed elsewhere) position by position.
    const std::array<uint32_t, 4> w = Philox4x32(seed, stream, i);
    const auto j = static_cast<size_t>(UniformBelow(w[0], w[1], i + 1));
    std::swap(out[i], out[j]);
  }
}

std::vector<int64_t> EpochPermutation(uint64_t seed, int64_t epoch, int64_t n) {
  EPOCHAL_CHECK(n >= 0, "n = ", n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  FillEpochPermutation(seed, epoch, order);
  return order;
}

IndexRange ShardRange(int64_t size, int rank, int world) {
  EPOCHAL_CHECK(size >= 0 && world >= 1 && rank >= 0 && rank < world, "size ", size, " rank ", rank,
                " world ", world);
  const int64_t base = size / world;
  const int64_t extra = size % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

std::span<const int64_t> Shard(std::span<const int64_t> batch, int rank, int world) {
  const IndexRange r = ShardRange(static_cast<int64_t>(batch.size()), rank, world);
  return batch.subspan(static_cast<size_t>(r.begin), static_cast<size_t>(r.size()));
}

EpochSampler::EpochSampler(int64_t n, int64_t global_batch_size, bool drop_last)
    : order_(static_cast<size_t>(n >= 0 ? n : 0)),
      global_batch_size_(global_batch_size),
      drop_last_(drop_last) {
  EPOCHAL_CHECK(n >= 0, "n = ", n);
  EPOCHAL_CHECK(global_batch_size >= 1, "global batch size ", global_batch_size);
  std::iota(order_.begin(), order_.end(), int64_t{0});
  const int64_t full = n / global_batch_size;
  const int64_t rest = n % global_batch_size;
  num_batches_ = full + (rest > 0 && !drop_last ? 1 : 0);
  dropped_ = drop_last ? rest : 0;
}

void EpochSampler::Shuffle(uint64_t seed, int64_t epoch) {
  FillEpochPermutation(seed, epoch, order_);
}

IndexRange EpochSampler::BatchRange(int64_t b) const {
  EPOCHAL_CHECK(b >= 0 && b < num_batches_, "batch ", b, " of ", num_batches_);
  const int64_t begin = b * global_batch_size_;
  return {begin, std::min(begin + global_batch_size_, size())};
}

std::span<const int64_t> EpochSampler::Batch(int64_t b) const {
  const IndexRange r = BatchRange(b);
  return std::span<const int64_t>(order_).subspan(static_cast<size_t>(r.begin),
                                                  static_cast<size_t>(r.size()));
}

}  // namespace epochal::data
