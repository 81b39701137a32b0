#include "http_auth.h"

#include <array>
#include <cctype>
#include <cstdint>

namespace comcl::plugin {

namespace {

// RFC 4648 base64 with padding; empty for anything else.
std::optional<std::string> decodeBase64(std::string_view text) {
  static const std::array<int, 256> values = [] {
    std::array<int, 256> table{};
    table.fill(-1);
    const std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (std::size_t i = 0; i < alphabet.size(); ++i)
      table[static_cast<unsigned char>(alphabet[i])] = static_cast<int>(i);
    return table;
  }();
  if (text.size() % 4 != 0)
    return std::nullopt;
  std::string out;
  std::uint32_t bits = 0;
  int count = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '=') {  // padding: only at the end, at most two
      if (text.size() - i > 2 || text.find_first_not_of('=', i) != std::string_view::npos)
        return std::nullopt;
      break;
    }
    const int value = values[static_cast<unsigned char>(c)];
    if (value < 0)
      return std::nullopt;
    bits = (bits << 6) | static_cast<std::uint32_t>(value);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<char>((bits >> count) & 0xFF));
    }
  }
  return out;
}

}  // namespace

std::optional<std::string> basicAuthUser(std::string_view authorization) {
  while (!authorization.empty() && authorization.front() == ' ')
    authorization.remove_prefix(1);
  constexpr std::string_view kScheme = "basic ";
  if (authorization.size() <= kScheme.size())
    return std::nullopt;
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i])
      return std::nullopt;
  }
  authorization.remove_prefix(kScheme.size());
  while (!authorization.empty() && (authorization.back() == ' ' || authorization.back() == '\r'))
    authorization.remove_suffix(1);
  const std::optional<std::string> credentials = decodeBase64(authorization);
  if (!credentials)
    return std::nullopt;
  const std::size_t colon = credentials->find(':');
  if (colon == std::string::npos)
    return std::nullopt;
  return credentials->substr(0, colon);
}

}  // namespace comcl::plugin
