// Multi-rank tests of SyncControlWord and SyncControlWordIdle, and the exact rate packing.
#include "epochal/dist/control_word.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "epochal/dist/communicator.h"
#include "gtest/gtest.h"

namespace epochal::dist {
namespace {

TEST(ControlWordTest, RootWordReachesEveryRank) {
  Communicator world;
  const std::vector<ControlWord> words = {
      {ControlWord::kContinue, 1, 0.0}, {ControlWord::kSetLearningRate, 17, 0.00125},
      {ControlWord::kPause, 18, 0.0},   {ControlWord::kCheckpoint, int64_t{1} << 40, 0.0},
      {ControlWord::kStop, 99, 0.0},
  };
  for (const ControlWord& root_word : words) {
    // Other ranks hold a different word; theirs must be ignored.
    const ControlWord mine =
        world.is_root() ? root_word : ControlWord{ControlWord::kStop, -world.rank(), 42.0};
    const ControlWord got = SyncControlWord(world, mine);
    EXPECT_EQ(got, root_word) << ActionName(got.action) << " at step " << got.step;
  }
}

TEST(ControlWordTest, IdleSyncDeliversTheRootWordEvenWhenTheRootIsLate) {
  Communicator world;
  const ControlWord root_word{ControlWord::kPause, 12, 0.0};
  // The root arrives late, as a paused rank 0 does; the others wait in the idle loop.
  if (world.is_root()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const ControlWord mine = world.is_root() ? root_word : ControlWord{};
  const ControlWord got = SyncControlWordIdle(world, mine, std::chrono::milliseconds(1));
  EXPECT_EQ(got, root_word);
}

TEST(ControlWordTest, PackedRateRoundTripsExactlyThroughAFloatSum) {
  for (double rate : {0.005, 0.01, 1e-7, 0.1 + 0.2, 3.0, std::nextafter(0.005, 1.0),
                      std::numeric_limits<double>::denorm_min()}) {
    PackedRate p = PackRate(rate);
    // What the all-reduce does: add the other ranks' zeros, in float.
    for (float& part : p.part) part = part + 0.0f + 0.0f;
    EXPECT_EQ(UnpackRate(p.part), rate);
    for (float part : p.part) EXPECT_LT(part, 16777216.0f);  // Exact in a float.
  }
}

}  // namespace
}  // namespace epochal::dist
