#include "epochal/data/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/core/rng.h"

namespace epochal::data {
namespace {

bool IsPermutation(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != static_cast<int64_t>(i)) return false;
  }
  return true;
}

TEST(EpochPermutationTest, IsAPermutation) {
  for (int64_t n : {0, 1, 2, 7, 1000, 60000}) {
    const std::vector<int64_t> p = EpochPermutation(42, 1, n);
    ASSERT_EQ(static_cast<int64_t>(p.size()), n);
    EXPECT_TRUE(IsPermutation(p)) << "n = " << n;
  }
}

TEST(EpochPermutationTest, DiffersBetweenEpochsAndSeeds) {
  const std::vector<int64_t> base = EpochPermutation(42, 1, 1000);
  EXPECT_NE(base, EpochPermutation(42, 2, 1000));
  EXPECT_NE(base, EpochPermutation(43, 1, 1000));
  EXPECT_NE(EpochPermutation(42, 0, 1000), EpochPermutation(42, 1, 1000));
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), int64_t{0});
  EXPECT_NE(base, identity);
}

TEST(EpochPermutationTest, IdenticalWhenRecomputedOnAnyThread) {
  const std::vector<int64_t> a = EpochPermutation(7, 3, 5000);
  std::vector<int64_t> b;
  std::thread t([&] { b = EpochPermutation(7, 3, 5000); });
  t.join();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, EpochPermutation(7, 3, 5000));
  std::vector<int64_t> c(5000, -1);
  FillEpochPermutation(7, 3, c);
  EXPECT_EQ(a, c);
}

// Pins the documented rule, so another implementation can reproduce the order.
TEST(EpochPermutationTest, FollowsDocumentedSwapRule) {
  const uint64_t seed = 1234;
  const int64_t epoch = 5;
  const int64_t n = 300;
  std::vector<int64_t> expected(n);
  std::iota(expected.begin(), expected.end(), int64_t{0});
  const uint64_t stream = StreamId({static_cast<uint64_t>(RngTag::kShuffle), epoch});
  for (int64_t i = n - 1; i >= 1; --i) {
    const auto w = Philox4x32(seed, stream, static_cast<uint64_t>(i));
    const auto j = static_cast<int64_t>(UniformBelow(w[0], w[1], static_cast<uint64_t>(i + 1)));
    std::swap(expected[static_cast<size_t>(i)], expected[static_cast<size_t>(j)]);
  }
  EXPECT_EQ(EpochPermutation(seed, epoch, n), expected);
}

// All 24 orders of 4 elements come out about equally often over many epochs; an
// off-by-one in the swap range would make some impossible or twice as likely.
TEST(EpochPermutationTest, OrdersAreUniform) {
  std::map<std::vector<int64_t>, int> counts;
  const int trials = 24000;
  for (int e = 0; e < trials; ++e) ++counts[EpochPermutation(9, e, 4)];
  ASSERT_EQ(counts.size(), 24u);
  for (const auto& [order, count] : counts) {
    EXPECT_NEAR(count, trials / 24, 150);  // about 5 standard deviations
  }
}

// Every index of 0..n-1 appears in the batches of the epoch, each exactly once.
void ExpectCoversOnce(const EpochSampler& s, int64_t n) {
  std::vector<int> seen(static_cast<size_t>(n), 0);
  for (int64_t b = 0; b < s.num_batches(); ++b) {
    for (int64_t i : s.Batch(b)) ++seen[static_cast<size_t>(i)];
  }
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], 1) << "index " << i;
}

TEST(EpochSamplerTest, StartsSequentialAndShufflesPerEpoch) {
  EpochSampler s(10, 4, false);
  EXPECT_EQ(std::vector<int64_t>(s.Batch(0).begin(), s.Batch(0).end()),
            (std::vector<int64_t>{0, 1, 2, 3}));
  s.Shuffle(42, 3);
  const std::vector<int64_t> order(s.order().begin(), s.order().end());
  EXPECT_EQ(order, EpochPermutation(42, 3, 10));
  EXPECT_EQ(std::vector<int64_t>(s.Batch(1).begin(), s.Batch(1).end()),
            std::vector<int64_t>(order.begin() + 4, order.begin() + 8));
}

TEST(EpochSamplerTest, CoversEveryIndexOnceWithPartialLastBatch) {
  EpochSampler s(103, 10, /*drop_last=*/false);
  EXPECT_EQ(s.num_batches(), 11);
  EXPECT_EQ(s.dropped(), 0);
  EXPECT_EQ(s.samples_per_epoch(), 103);
  for (int64_t epoch : {1, 2}) {
    s.Shuffle(42, epoch);
    for (int64_t b = 0; b < 10; ++b) EXPECT_EQ(s.Batch(b).size(), 10u);
    EXPECT_EQ(s.Batch(10).size(), 3u);
    EXPECT_EQ(s.BatchRange(10), (IndexRange{100, 103}));
    ExpectCoversOnce(s, 103);
  }
  EXPECT_THROW(s.Batch(11), Error);
  EXPECT_THROW(s.Batch(-1), Error);
}

TEST(EpochSamplerTest, DropLastDropsAndCounts) {
  EpochSampler s(103, 10, /*drop_last=*/true);
  EXPECT_EQ(s.num_batches(), 10);
  EXPECT_EQ(s.dropped(), 3);
  EXPECT_EQ(s.samples_per_epoch(), 100);
  std::set<int64_t> dropped_over_epochs;
  for (int64_t epoch : {1, 2, 3}) {
    s.Shuffle(42, epoch);
    std::set<int64_t> seen;
    for (int64_t b = 0; b < s.num_batches(); ++b) {
      ASSERT_EQ(s.Batch(b).size(), 10u);
      seen.insert(s.Batch(b).begin(), s.Batch(b).end());
    }
    EXPECT_EQ(seen.size(), 100u);  // no repeats
    // The dropped samples are exactly the tail of this epoch's order.
    for (int64_t i = 100; i < 103; ++i) {
      const int64_t left_out = s.order()[static_cast<size_t>(i)];
      EXPECT_EQ(seen.count(left_out), 0u);
      dropped_over_epochs.insert(left_out);
    }
  }
  EXPECT_GT(dropped_over_epochs.size(), 3u);  // a different tail each epoch
}

TEST(EpochSamplerTest, ExactMultipleDropsNothing) {
  EpochSampler s(100, 10, /*drop_last=*/true);
  EXPECT_EQ(s.num_batches(), 10);
  EXPECT_EQ(s.dropped(), 0);
  s.Shuffle(1, 1);
  ExpectCoversOnce(s, 100);
}

TEST(EpochSamplerTest, FewerSamplesThanOneBatch) {
  EpochSampler keep(5, 8, /*drop_last=*/false);
  EXPECT_EQ(keep.num_batches(), 1);
  EXPECT_EQ(keep.Batch(0).size(), 5u);
  EpochSampler drop(5, 8, /*drop_last=*/true);
  EXPECT_EQ(drop.num_batches(), 0);
  EXPECT_EQ(drop.dropped(), 5);
  EpochSampler empty(0, 8, /*drop_last=*/false);
  EXPECT_EQ(empty.num_batches(), 0);
  EXPECT_THROW(EpochSampler(5, 0, false), Error);
}

TEST(ShardTest, CoversBatchExactlyForWorldSizesOneToFive) {
  for (int world = 1; world <= 5; ++world) {
    for (int64_t size = 0; size <= 13; ++size) {
      std::vector<int64_t> batch(static_cast<size_t>(size));
      std::iota(batch.begin(), batch.end(), int64_t{100});
      std::vector<int64_t> joined;
      size_t smallest = batch.size(), largest = 0;
      for (int rank = 0; rank < world; ++rank) {
        const std::span<const int64_t> part = Shard(batch, rank, world);
        const IndexRange r = ShardRange(size, rank, world);
        EXPECT_EQ(static_cast<int64_t>(part.size()), r.size());
        joined.insert(joined.end(), part.begin(), part.end());
        smallest = std::min(smallest, part.size());
        largest = std::max(largest, part.size());
      }
      // Concatenated in rank order the shards give back the batch: no loss, no duplicate.
      EXPECT_EQ(joined, batch) << "world " << world << " size " << size;
      EXPECT_LE(largest - smallest, 1u) << "world " << world << " size " << size;
    }
  }
}

TEST(ShardTest, BatchSmallerThanWorldLeavesLastRanksEmpty) {
  const std::vector<int64_t> batch = {7, 8};
  EXPECT_EQ(Shard(batch, 0, 5).size(), 1u);
  EXPECT_EQ(Shard(batch, 1, 5)[0], 8);
  for (int rank = 2; rank < 5; ++rank) EXPECT_TRUE(Shard(batch, rank, 5).empty());
  EXPECT_EQ(ShardRange(10, 0, 3), (IndexRange{0, 4}));
  EXPECT_EQ(ShardRange(10, 1, 3), (IndexRange{4, 7}));
  EXPECT_EQ(ShardRange(10, 2, 3), (IndexRange{7, 10}));
  EXPECT_THROW(ShardRange(10, 3, 3), Error);
  EXPECT_THROW(ShardRange(10, 0, 0), Error);
}

TEST(ShardTest, RankBatchesPartitionEachGlobalBatch) {
  EpochSampler s(1000, 96, /*drop_last=*/false);
  s.Shuffle(5, 2);
  for (int world = 1; world <= 5; ++world) {
    std::vector<int> seen(1000, 0);
    for (int64_t b = 0; b < s.num_batches(); ++b) {
      std::vector<int64_t> joined;
      for (int rank = 0; rank < world; ++rank) {
        const std::span<const int64_t> part = s.RankBatch(b, rank, world);
        joined.insert(joined.end(), part.begin(), part.end());
      }
      const std::span<const int64_t> global = s.Batch(b);
      EXPECT_TRUE(std::equal(joined.begin(), joined.end(), global.begin(), global.end()));
      for (int64_t i : joined) ++seen[static_cast<size_t>(i)];
    }
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
  }
}

}  // namespace
}  // namespace epochal::data
