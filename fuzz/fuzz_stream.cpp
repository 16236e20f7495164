// Stream bytes of every family, fed in pieces whose sizes come from the input, then finish().
// Also checks that split and whole feeding agree on success, and re-encodes whatever chunks came
// out as Anthropic's event stream (the ingress's encoder takes chunks of every family).
#include <cstdlib>
#include <vector>

#include "common.hpp"
#include "wire/anthropic_messages.hpp"

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
  modelux::wire::AnthropicStreamEncoder enc("msg_fuzz", "m");
  std::string events;
  for (const auto& c : a) enc.add(c, events);
  enc.finish(events);
  if (events.find("event: message_stop") == std::string::npos) std::abort();  // every stream is closed
  return 0;
}
