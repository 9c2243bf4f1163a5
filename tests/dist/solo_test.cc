// Single-process tests: the solo communicator, the bucket plan and the pieces that need no
// MPI launcher. MPI is never initialized in this binary.
#include <cstdlib>
#include <string>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/dist/communicator.h"
#include "epochal/dist/control_word.h"
#include "epochal/dist/gradient_bucketer.h"
#include "epochal/dist/mpi_environment.h"
#include "gtest/gtest.h"

namespace epochal::dist {
namespace {

TEST(SoloCommunicatorTest, IsRankZeroOfOne) {
  Communicator solo = Communicator::Solo();
  EXPECT_EQ(solo.rank(), 0);
  EXPECT_EQ(solo.size(), 1);
  EXPECT_TRUE(solo.is_root());
  EXPECT_TRUE(solo.solo());
  EXPECT_EQ(solo.comm(), MPI_COMM_NULL);
  EXPECT_TRUE(solo.Duplicate().solo());
  EXPECT_FALSE(MpiEnvironment::Initialized());
}

TEST(SoloCommunicatorTest, WorldOrSoloIsSoloWithoutMpi) {
  EXPECT_TRUE(Communicator::WorldOrSolo().solo());
}

TEST(SoloCommunicatorTest, WorldWithoutMpiIsAnError) { EXPECT_THROW(Communicator(), Error); }

TEST(SoloCommunicatorTest, CollectivesLeaveDataAlone) {
  Communicator solo = Communicator::Solo();
  solo.Barrier();
  std::vector<float> floats = {1.5f, -2.0f};
  std::vector<double> doubles = {0.1, 0.2};
  std::vector<int64_t> ints = {int64_t{1} << 60, -3};
  std::string text = "unchanged";
  solo.Broadcast(std::span<float>(floats));
  solo.Broadcast(std::span<double>(doubles));
  solo.Broadcast(std::span<int64_t>(ints));
  solo.Broadcast(&text);
  solo.AllreduceSum(std::span<float>(floats));
  solo.AllreduceSum(std::span<double>(doubles));
  solo.AllreduceSum(std::span<int64_t>(ints));
  EXPECT_EQ(floats, (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(doubles, (std::vector<double>{0.1, 0.2}));
  EXPECT_EQ(ints, (std::vector<int64_t>{int64_t{1} << 60, -3}));
  EXPECT_EQ(text, "unchanged");
  EXPECT_EQ(solo.AllreduceMax(-7), -7);
  EXPECT_EQ(solo.AllreduceMin(9), 9);
  EXPECT_THROW(solo.Broadcast(std::span<float>(floats), /*root=*/1), Error);
}

TEST(SoloCommunicatorTest, GatherCopies) {
  Communicator solo = Communicator::Solo();
  const std::vector<double> send = {1.0, 2.0, 3.0};
  std::vector<double> received = {9.0};
  solo.Gather(send, &received);
  EXPECT_EQ(received, send);
  EXPECT_THROW(solo.Gather(send, nullptr), Error);
}

TEST(SoloCommunicatorTest, SyncControlWordReturnsTheWord) {
  const ControlWord word{ControlWord::kSetLearningRate, 12, 0.005};
  EXPECT_EQ(SyncControlWord(Communicator::Solo(), word), word);
}

TEST(PlanBucketsTest, WalksLastToFirstUnderTheThreshold) {
  // Threshold 100 bytes = 25 floats.
  const std::vector<size_t> sizes = {5, 10, 10, 30, 4, 20};
  const auto plan = PlanBuckets(sizes, 100);
  // 20+4 fit (96 bytes); 30 is over the threshold alone; 10+10+5 fit exactly (100 bytes).
  EXPECT_EQ(plan, (std::vector<std::vector<size_t>>{{5, 4}, {3}, {2, 1, 0}}));
}

TEST(PlanBucketsTest, EdgeCases) {
  EXPECT_TRUE(PlanBuckets({}, 100).empty());
  const std::vector<size_t> three = {1, 1, 1};
  EXPECT_EQ(PlanBuckets(three, 0), (std::vector<std::vector<size_t>>{{2}, {1}, {0}}));
  EXPECT_EQ(PlanBuckets(three, kDefaultBucketBytes), (std::vector<std::vector<size_t>>{{2, 1, 0}}));
  // Empty parameters join whatever bucket is open, unless it is already over the threshold.
  const std::vector<size_t> small_with_empty = {0, 5, 0};
  EXPECT_EQ(PlanBuckets(small_with_empty, 40), (std::vector<std::vector<size_t>>{{2, 1, 0}}));
  const std::vector<size_t> large_with_empty = {0, 1000, 0};
  EXPECT_EQ(PlanBuckets(large_with_empty, 40), (std::vector<std::vector<size_t>>{{2}, {1}, {0}}));
}

TEST(SoloBucketerTest, LeavesGradientsAndExtrasUnchanged) {
  std::vector<float> a(100, 3.0f);
  std::vector<float> b(7, -1.0f);
  GradientBucketer bucketer(Communicator::Solo(), {std::span<float>(a), std::span<float>(b)},
                            /*bucket_bytes=*/64, /*num_extras=*/3);
  EXPECT_EQ(bucketer.num_buckets(), 2u);
  EXPECT_EQ(bucketer.bucket_of(0), 1u);
  EXPECT_EQ(bucketer.bucket_floats(1), 103u);
  for (int step = 0; step < 2; ++step) {
    bucketer.BeginStep();
    bucketer.extras()[0] = 4.5f;
    bucketer.extras()[1] = 3.0f;
    bucketer.extras()[2] = 8.0f;
    bucketer.MarkReady(1);
    bucketer.Poll();
    bucketer.MarkReady(0);
    bucketer.Wait();
    EXPECT_EQ(a, std::vector<float>(100, 3.0f));
    EXPECT_EQ(b, std::vector<float>(7, -1.0f));
    EXPECT_EQ(std::vector<float>(bucketer.extras().begin(), bucketer.extras().end()),
              (std::vector<float>{4.5f, 3.0f, 8.0f}));
    EXPECT_EQ(bucketer.exposed_wait_seconds(), 0.0);
    EXPECT_EQ(bucketer.allreduce_seconds(), 0.0);
    EXPECT_EQ(bucketer.hidden_fraction(), 0.0);
  }
  bucketer.BeginStep();
  bucketer.MarkReady(1);
  EXPECT_THROW(bucketer.Wait(), Error);
}

TEST(MpiEnvironmentTest, LaunchedByMpiReadsLauncherVariables) {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) unsetenv(name);
  EXPECT_FALSE(MpiEnvironment::LaunchedByMpi());
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    setenv(name, "2", 1);
    EXPECT_TRUE(MpiEnvironment::LaunchedByMpi()) << name;
    unsetenv(name);
  }
}

TEST(MpiEnvironmentTest, ThreadLevelNames) {
  EXPECT_EQ(ThreadLevelName(MPI_THREAD_SINGLE), "MPI_THREAD_SINGLE");
  EXPECT_EQ(ThreadLevelName(MPI_THREAD_FUNNELED), "MPI_THREAD_FUNNELED");
  EXPECT_EQ(ThreadLevelName(MPI_THREAD_SERIALIZED), "MPI_THREAD_SERIALIZED");
  EXPECT_EQ(ThreadLevelName(MPI_THREAD_MULTIPLE), "MPI_THREAD_MULTIPLE");
  EXPECT_EQ(ThreadLevelName(77), "thread level 77");
}

TEST(ControlWordTest, ActionNames) {
  EXPECT_STREQ(ActionName(ControlWord::kContinue), "continue");
  EXPECT_STREQ(ActionName(ControlWord::kPause), "pause");
  EXPECT_STREQ(ActionName(ControlWord::kStop), "stop");
  EXPECT_STREQ(ActionName(ControlWord::kSetLearningRate), "set_learning_rate");
  EXPECT_STREQ(ActionName(ControlWord::kCheckpoint), "checkpoint");
  EXPECT_STREQ(ActionName(42), "unknown");
}

}  // namespace
}  // namespace epochal::dist
