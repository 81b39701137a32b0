// FNV-1a, 64 bit: a content hash that is the same in every build and process (std::hash is not), for data
// snapshot ids, split ids and hash-based split assignment.
#pragma once

#include <cstdint>
#include <string>

namespace comcl::training {

class StableHash {
 public:
  StableHash& add(const std::string& text) {
    for (unsigned char c : text)
      mix(c);
    mix(0x1f);  // field separator, so ("ab", "c") and ("a", "bc") differ
    return *this;
  }
  StableHash& add(double value) { return add(std::to_string(value)); }
  std::uint64_t value() const { return hash_; }
  // "<prefix>-<16 hex digits>"
  std::string id(const std::string& prefix) const {
    static const char* digits = "0123456789abcdef";
    std::string hex(16, '0');
    for (int i = 0; i < 16; ++i)
      hex[static_cast<std::size_t>(15 - i)] = digits[(hash_ >> (4 * i)) & 0xf];
    return prefix + "-" + hex;
  }

 private:
  void mix(unsigned char c) {
    hash_ ^= c;
    hash_ *= 0x100000001b3ULL;
  }
  std::uint64_t hash_ = 0xcbf29ce484222325ULL;
};

}  // namespace comcl::training
