// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
//
// Every random number epochal draws is a pure function of (seed, stream, counter):
// there is no hidden state, so the same value comes out whatever the thread count,
// the rank count or the point a run resumed from. Streams separate uses (the epoch
// shuffle, one dropout layer in one epoch, weight initialization) and counters index
// draws within a stream (a sample, an element).
// Thread safety: all functions are pure and may be called from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>

namespace epochal {

// Four 32-bit random words for (seed, stream, counter).
std::array<uint32_t, 4> Philox4x32(uint64_t seed, uint64_t stream, uint64_t counter);

// Mixes a list of small integers (a tag, an epoch, a layer index) into a stream id.
uint64_t StreamId(std::initializer_list<uint64_t> parts);

// A uniform float in [0, 1) from one 32-bit word (24 random mantissa bits).
inline float UniformFloat(uint32_t word) {
  return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
}

// A uniform integer in [0, n) from two 32-bit words (bias below 2^-32 for n < 2^32).
inline uint64_t UniformBelow(uint32_t hi, uint32_t lo, uint64_t n) {
  __extension__ using Uint128 = unsigned __int128;
  const uint64_t x = (static_cast<uint64_t>(hi) << 32) | lo;
  return static_cast<uint64_t>((static_cast<Uint128>(x) * n) >> 64);
}

// Sequential view of one stream: draws words counter by counter. Cheap to copy; two
// copies produce the same sequence.
class CounterRng {
 public:
  CounterRng(uint64_t seed, uint64_t stream, uint64_t first_counter = 0)
      : seed_(seed), stream_(stream), counter_(first_counter) {}

  uint32_t NextWord();
  // Uniform in [0, 1).
  float NextUniform() { return UniformFloat(NextWord()); }
  // Uniform in [lo, hi).
  float NextUniform(float lo, float hi) { return lo + (hi - lo) * NextUniform(); }
  // Uniform integer in [0, n).
  uint64_t NextBelow(uint64_t n);
  // Standard normal (Box-Muller).
  double NextNormal();

 private:
  uint64_t seed_;
  uint64_t stream_;
  uint64_t counter_;
  std::array<uint32_t, 4> block_{};
  int used_ = 4;
};

// Well-known stream tags, so no two uses share a stream by accident.
enum class RngTag : uint64_t {
  kInit = 1,
  kShuffle = 2,
  kDropout = 3,
  kProbe = 4,
  kTest = 99,
};

}  // namespace epochal
