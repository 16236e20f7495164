// Anthropic Messages, server side, as the mock provider streams it. The request and response
// translation and the event encoder live in the library (src/wire/anthropic_messages.cpp),
// shared with the proxy's Anthropic ingress; this file only turns a whole response into the
// events a provider would send.
#include "testing/server_codecs.hpp"

namespace modelux::wire {

std::vector<std::string> anthropic_stream_events(const ChatResponse& r, int chunks) {
  // A provider knows its input tokens before it streams: message_start carries them.
  AnthropicStreamEncoder enc(r.id, r.model, r.usage);
  std::vector<std::string> out;
  std::string events;
  auto split = [&] {
    // One entry per SSE event, as the mock paces them.
    std::size_t at = 0;
    while (at < events.size()) {
      auto end = events.find("\n\n", at);
      if (end == std::string::npos) break;
      out.push_back(events.substr(at, end + 2 - at));
      at = end + 2;
    }
    events.clear();
  };
  for (const ChatChunk& c : response_to_chunks(r, chunks, true)) {
    enc.add(c, events);
    split();
  }
  enc.finish(events);
  split();
  return out;
}

}  // namespace modelux::wire
