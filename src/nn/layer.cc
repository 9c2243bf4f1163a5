#include "epochal/nn/layer.h"

#include <cmath>
#include <functional>

#include "epochal/core/hash.h"
#include "epochal/core/rng.h"

namespace epochal::nn {

std::vector<float> GlorotUniform(uint64_t seed, const std::string& layer_name, int64_t count,
                                 int64_t fan_in, int64_t fan_out) {
  const float limit = std::sqrt(6.0f / static_cast<float>(fan_in + fan_out));
  // std::hash is not stable across standard libraries; FNV-1a is.
  const uint64_t name_hash = Fnv1a(layer_name);
  CounterRng rng(seed, StreamId({static_cast<uint64_t>(RngTag::kInit), name_hash}));
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = rng.NextUniform(-limit, limit);
  return values;
}

}  // namespace epochal::nn
