// FNV-1a against its published test vectors; chaining equals hashing the concatenation.
#include "epochal/core/hash.h"

#include <gtest/gtest.h>

#include <string>

namespace epochal {
namespace {

TEST(HashTest, MatchesTheFnv1aTestVectors) {
  EXPECT_EQ(Fnv1a(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a("foobar"), 0x85944171f73967e8ull);
}

TEST(HashTest, ContinuingEqualsHashingTheWhole) {
  const std::string a = "conv1_", b = "1.weights";
  EXPECT_EQ(Fnv1a(b, Fnv1a(a)), Fnv1a(a + b));
  EXPECT_EQ(Fnv1a("", 0, 7), 7u);
}

}  // namespace
}  // namespace epochal
