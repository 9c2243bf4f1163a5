// Multi-rank tests of Communicator, MpiEnvironment's queries and EPOCHAL_MPI_CHECK; run at
// 1, 2 and 4 ranks.
#include "epochal/dist/communicator.h"

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/dist/mpi_check.h"
#include "epochal/dist/mpi_environment.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace epochal::dist {
namespace {

using ::epochal::dist::testing::RankWeightSum;

TEST(CommunicatorTest, RankAndSizeMatchMpi) {
  Communicator world;
  int rank = -1;
  int size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(world.rank(), rank);
  EXPECT_EQ(world.size(), size);
  EXPECT_EQ(world.is_root(), rank == 0);
  EXPECT_FALSE(world.solo());
  EXPECT_EQ(world.comm(), MPI_COMM_WORLD);
  world.Barrier();
}

TEST(CommunicatorTest, WorldOrSoloGivesWorldUnderMpi) {
  Communicator world = Communicator::WorldOrSolo();
  EXPECT_FALSE(world.solo());
  EXPECT_EQ(world.comm(), MPI_COMM_WORLD);
}

TEST(CommunicatorTest, BroadcastFloatsFromEveryRoot) {
  Communicator world;
  for (int root = 0; root < world.size(); ++root) {
    std::vector<float> data(1000);
    for (size_t i = 0; i < data.size(); ++i) {
      data[i] = static_cast<float>(world.rank() * 10000 + static_cast<int>(i)) + 0.25f;
    }
    world.Broadcast(std::span<float>(data), root);
    for (size_t i = 0; i < data.size(); ++i) {
      ASSERT_EQ(data[i], static_cast<float>(root * 10000 + static_cast<int>(i)) + 0.25f)
          << "root " << root << " element " << i;
    }
  }
}

TEST(CommunicatorTest, BroadcastDoublesAndInt64FromRoot) {
  Communicator world;
  std::vector<double> doubles = {0.1, -2.5e300, 3.0};
  std::vector<int64_t> ints = {int64_t{1} << 62, -7, 0};
  if (!world.is_root()) {
    doubles.assign(3, -1.0);
    ints.assign(3, -1);
  }
  world.Broadcast(std::span<double>(doubles));
  world.Broadcast(std::span<int64_t>(ints));
  EXPECT_EQ(doubles, (std::vector<double>{0.1, -2.5e300, 3.0}));
  EXPECT_EQ(ints, (std::vector<int64_t>{int64_t{1} << 62, -7, 0}));
}

TEST(CommunicatorTest, BroadcastStringResizesOtherRanks) {
  Communicator world;
  const std::string long_text(100000, 'x');
  for (const std::string& sent : {std::string("config: {lr: 0.01}"), std::string(), long_text}) {
    std::string text = world.is_root() ? sent : std::string("something else, longer than some");
    world.Broadcast(&text);
    EXPECT_EQ(text, sent);
  }
  const int last = world.size() - 1;
  std::string from_last = world.rank() == last ? "from the last rank" : "";
  world.Broadcast(&from_last, last);
  EXPECT_EQ(from_last, "from the last rank");
}

TEST(CommunicatorTest, AllreduceSumDoublesIsExact) {
  Communicator world;
  // Multiples of 1/4 near 2^40: every partial sum is representable, whatever the order.
  std::vector<double> data(257);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = 1099511627776.0 + 0.25 * (world.rank() + 1) * static_cast<double>(i);
  }
  world.AllreduceSum(std::span<double>(data));
  const double n = world.size();
  for (size_t i = 0; i < data.size(); ++i) {
    ASSERT_EQ(data[i], n * 1099511627776.0 + 0.25 *
                                                 static_cast<double>(RankWeightSum(world.size())) *
                                                 static_cast<double>(i))
        << i;
  }
}

TEST(CommunicatorTest, AllreduceSumFloatsOfIntegers) {
  Communicator world;
  std::vector<float> data = {1.0f, -3.0f, 1000.0f};
  for (float& x : data) x *= static_cast<float>(world.rank() + 1);
  world.AllreduceSum(std::span<float>(data));
  const float w = static_cast<float>(RankWeightSum(world.size()));
  EXPECT_EQ(data, (std::vector<float>{w, -3.0f * w, 1000.0f * w}));
}

TEST(CommunicatorTest, AllreduceSumInt64IsExactBeyondDoublePrecision) {
  Communicator world;
  // 2^58 + rank: the sum needs more than a double's 53 bits.
  std::vector<int64_t> data = {(int64_t{1} << 58) + world.rank(), -world.rank(), 1};
  world.AllreduceSum(std::span<int64_t>(data));
  const int64_t n = world.size();
  const int64_t rank_sum = n * (n - 1) / 2;
  EXPECT_EQ(data[0], n * (int64_t{1} << 58) + rank_sum);
  EXPECT_EQ(data[1], -rank_sum);
  EXPECT_EQ(data[2], n);
}

TEST(CommunicatorTest, AllreduceMaxAndMin) {
  Communicator world;
  const int64_t value = (int64_t{1} << 40) * (world.rank() % 2 == 0 ? 1 : -1) + world.rank();
  const int64_t expected_max = world.size() > 2 ? (int64_t{1} << 40) + 2 : (int64_t{1} << 40);
  EXPECT_EQ(world.AllreduceMax(value), expected_max);
  EXPECT_EQ(world.AllreduceMin(value),
            world.size() > 1 ? -(int64_t{1} << 40) + 1 : (int64_t{1} << 40));
}

TEST(CommunicatorTest, GatherConcatenatesInRankOrderWithUnequalCounts) {
  Communicator world;
  // Rank r sends r values (rank 0 sends none): r*100 + k.
  std::vector<double> send;
  for (int k = 0; k < world.rank(); ++k) send.push_back(world.rank() * 100 + k);
  std::vector<double> expected;
  for (int r = 0; r < world.size(); ++r) {
    for (int k = 0; k < r; ++k) expected.push_back(r * 100 + k);
  }
  for (int root : {0, world.size() - 1}) {
    std::vector<double> received = {-1.0};
    world.Gather(send, world.rank() == root ? &received : nullptr, root);
    if (world.rank() == root) {
      EXPECT_EQ(received, expected) << "root " << root;
    } else {
      EXPECT_EQ(received, std::vector<double>{-1.0});
    }
  }
}

TEST(CommunicatorTest, DuplicateHasSameRanksAndSeparateTraffic) {
  Communicator world;
  Communicator dup = world.Duplicate();
  EXPECT_EQ(dup.rank(), world.rank());
  EXPECT_EQ(dup.size(), world.size());
  EXPECT_NE(dup.comm(), world.comm());
  int compare = MPI_UNEQUAL;
  MPI_Comm_compare(dup.comm(), world.comm(), &compare);
  EXPECT_EQ(compare, MPI_CONGRUENT);
  EXPECT_EQ(dup.AllreduceMax(dup.rank()), world.size() - 1);
  Communicator moved = std::move(dup);
  EXPECT_EQ(moved.AllreduceMin(moved.rank()), 0);
}

TEST(MpiCheckTest, FailedCallThrowsSystemErrorWithCallAndMpiText) {
  Communicator world;
  Communicator dup = world.Duplicate();
  MPI_Comm_set_errhandler(dup.comm(), MPI_ERRORS_RETURN);
  int value = 0;
  // Every rank names the same invalid root, so every rank fails the same way.
  const int bad_root = world.size() + 5;
  try {
    EPOCHAL_MPI_CHECK(MPI_Bcast(&value, 1, MPI_INT, bad_root, dup.comm()));
    ADD_FAILURE() << "no exception";
  } catch (const SystemError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("communicator_test.cc:"), std::string::npos) << message;
    EXPECT_NE(message.find("MPI_Bcast(&value, 1, MPI_INT, bad_root, dup.comm())"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find(detail::MpiErrorText(MPI_ERR_ROOT)), std::string::npos) << message;
  }
  EXPECT_NO_THROW(EPOCHAL_MPI_CHECK(MPI_Barrier(dup.comm())));
}

TEST(MpiEnvironmentTest, LaunchedAndInitializedUnderMpiexec) {
  EXPECT_TRUE(MpiEnvironment::LaunchedByMpi());
  EXPECT_TRUE(MpiEnvironment::Initialized());
}

TEST(MpiEnvironmentTest, SecondEnvironmentIsRejected) {
  int argc = 0;
  char** argv = nullptr;
  EXPECT_THROW({ MpiEnvironment second(&argc, &argv); }, Error);
  EXPECT_TRUE(MpiEnvironment::Initialized());
}

}  // namespace
}  // namespace epochal::dist
