// Native error responses (status from byte 1, a header block, then the body) -> Error.
#include <string>

#include "common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  int status = 400 + data[1] % 140;
  std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);
  // "name: value\n" lines up to a blank line are headers; the rest is the body
  modelux::Headers headers;
  while (true) {
    auto nl = rest.find('\n');
    if (nl == std::string_view::npos || nl == 0) {
      if (nl == 0) rest.remove_prefix(1);
      break;
    }
    std::string_view line = rest.substr(0, nl);
    auto colon = line.find(':');
    if (colon != std::string_view::npos)
      headers.emplace_back(std::string(line.substr(0, colon)), std::string(line.substr(colon + 1)));
    rest.remove_prefix(nl + 1);
  }
  auto e = fuzz::pick(data).decode_error(status, headers, rest);
  (void)e;
  return 0;
}
