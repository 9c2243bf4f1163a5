// leakage_pairs.svg: an image grid of the leakage scan's pairs, so that a person can check
// each flagged twin by eye. Self-contained: every image is an embedded PNG (data URI).
#pragma once

#include <cstdint>
#include <string>

#include "epochal/data/idx.h"
#include "epochal/data/leakage.h"

namespace epochal::report {

// Pairs drawn by default; the title says how many there are in all.
inline constexpr int64_t kMaxSvgLeakagePairs = 200;

// The SVG document: a title with the counts per kind, then one cell per pair (the first
// `max_pairs` of report.pairs) with the validation image, the training image, the training
// image under the pair's transform, and the pair's indices, kind, transform, RMSE and
// labels. Images of 1 channel are grey, of 3 channels colour; others show channel 0.
std::string LeakagePairsSvg(const data::LeakageReport& report, const data::Dataset& train,
                            const data::Dataset& val, int64_t max_pairs = kMaxSvgLeakagePairs);

// A PNG file (8-bit grey or RGB, no interlace) of `width` x `height` pixels from
// `channels` (1 or 3) planar planes of bytes.
std::string EncodePng(const uint8_t* planes, int64_t channels, int64_t height, int64_t width);

}  // namespace epochal::report
