// The key under which an image is stored in the image cache: a 64-bit FNV-1a hash of the resource id.
// It is known before the index row exists, so the pixels can be written (and made durable) before any row
// refers to them; a read checks it so that a slot reused for another image is never served by mistake.
#pragma once

#include <cstdint>
#include <string_view>

namespace comcl::storage {

inline std::uint64_t cacheKey(std::string_view resourceId) {
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : resourceId) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

}  // namespace comcl::storage
