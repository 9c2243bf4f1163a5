// Multi-rank test of SyncControlWord.
#include "epochal/dist/control_word.h"

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

}  // namespace
}  // namespace epochal::dist
