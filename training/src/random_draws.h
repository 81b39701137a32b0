// Random draws shared by the augmentations and the degradations. Written out rather than taken from
// std::uniform_real_distribution / std::uniform_int_distribution, whose algorithms differ between standard
// libraries: the same seed must give the same draws everywhere.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

namespace comcl::training::detail {

// One generator output: its top 53 bits divided by 2^53, so the result is in [0, 1).
inline double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

inline double uniform(std::mt19937_64& rng, double low, double high) {
  return low + (high - low) * uniform01(rng);
}

// An integer in [low, high], both included, from one draw.
inline std::int64_t uniformInt(std::mt19937_64& rng, std::int64_t low, std::int64_t high) {
  const auto count = static_cast<double>(high - low + 1);
  return low + std::min(high - low, static_cast<std::int64_t>(uniform01(rng) * count));
}

}  // namespace comcl::training::detail
