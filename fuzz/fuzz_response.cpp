// Native success bodies of every family -> unified response. Must never crash or hang.
#include "common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  auto r = fuzz::pick(data).decode_response(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  (void)r;
  return 0;
}
