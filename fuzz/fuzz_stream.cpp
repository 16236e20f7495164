// Stream bytes of every family, fed in pieces whose sizes come from the input, then finish().
// Also checks that split and whole feeding agree on success.
#include <cstdlib>
#include <vector>

#include "common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const auto& codec = fuzz::pick(data);
  std::size_t step = 1 + data[1] % 64;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
  auto whole = codec.stream_decoder();
  std::vector<modelux::ChatChunk> a, b;
  bool ok_whole = whole->feed(bytes, a).has_value() && whole->finish(a).has_value();
  auto split = codec.stream_decoder();
  bool ok_split = true;
  for (std::size_t i = 0; i < bytes.size() && ok_split; i += step)
    ok_split = split->feed(bytes.substr(i, step), b).has_value();
  if (ok_split) ok_split = split->finish(b).has_value();
  if (ok_whole != ok_split || (ok_whole && a.size() != b.size())) std::abort();  // split-dependence is a bug
  return 0;
}
