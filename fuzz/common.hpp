// Shared by the fuzz targets: the first input byte picks the codec family, the rest is the
// provider's bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "modelux/wire.hpp"

namespace fuzz {
inline constexpr std::string_view kFamilies[] = {"openai", "azure", "anthropic", "gemini", "cohere", "bedrock"};
inline const modelux::Codec& pick(const std::uint8_t* data) {
  return *modelux::find_codec(kFamilies[data[0] % std::size(kFamilies)]);
}
}  // namespace fuzz
