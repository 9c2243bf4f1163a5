// Helpers shared by the dist tests.
#pragma once

#include <cstdint>

namespace epochal::dist::testing {

// Sum over ranks 0..size-1 of (rank + 1): the factor by which a value scaled by (rank + 1)
// on each rank grows in an all-reduce.
inline int64_t RankWeightSum(int size) { return int64_t{size} * (size + 1) / 2; }

}  // namespace epochal::dist::testing
