// Stream bytes of every family, fed in pieces whose sizes come from the input, then finish().
// Also checks that split and whole feeding agree on success, and re-encodes whatever chunks came
// out as Anthropic's event stream (the ingress's encoder takes chunks of every family).
#include <cstdlib>
#include <vector>

#include "common.hpp"
#include "wire/anthropic_messages.hpp"
#include "wire/openai_relay.hpp"

namespace {
// What a caller sees of a chunk, whichever decoder produced it.
bool same(const modelux::ChatChunk& x, const modelux::ChatChunk& y) {
  if (x.choices.size() != y.choices.size() || x.usage.has_value() != y.usage.has_value()) return false;
  if (x.usage && (x.usage->prompt_tokens != y.usage->prompt_tokens || x.usage->completion_tokens != y.usage->completion_tokens))
    return false;
  for (std::size_t i = 0; i < x.choices.size(); ++i) {
    const auto &p = x.choices[i], &q = y.choices[i];
    if (p.index != q.index || p.role != q.role || p.content != q.content || p.finish_reason != q.finish_reason ||
        p.tool_calls.size() != q.tool_calls.size())
      return false;
  }
  return true;
}
}  // namespace

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
  // OpenAI's relay decoder (the proxy's path for an OpenAI caller), fed in the same pieces and
  // handed every chunk back after each piece (its buffers are reused): the same chunks as the
  // full decoder's, each relayed one with its event.
  if (&codec == modelux::find_codec("openai")) {
    auto relay = modelux::openai_relay_decoder("chatcmpl-fuzz", "m");
    std::vector<modelux::ChatChunk> got, piece;
    bool ok_relay = true;
    for (std::size_t i = 0; i < bytes.size() && ok_relay; i += step) {
      ok_relay = relay->feed(bytes.substr(i, step), piece).has_value();
      got.insert(got.end(), piece.begin(), piece.end());
      relay->recycle(piece);
    }
    if (ok_relay) ok_relay = relay->finish(got).has_value();
    if (ok_relay != ok_whole || (ok_whole && got.size() != a.size())) std::abort();
    for (std::size_t i = 0; ok_whole && i < a.size(); ++i) {
      if (!same(a[i], got[i]) || got[i].id != "chatcmpl-fuzz" || got[i].model != "m") std::abort();
      const std::string& ev = got[i].sse;
      if (ev.empty()) continue;
      if (!ev.starts_with("data: {") || !ev.ends_with("\n\n")) std::abort();
      // The relayed bytes are what the caller parses: valid JSON that decodes to the same
      // chunk, with our id and model (the same-shape path builds them from an earlier event).
      auto j = modelux::parse_json(std::string_view(ev).substr(6, ev.size() - 8));
      if (!j) std::abort();
      auto back = modelux::chat_chunk_from_json(*j);
      if (!back || !same(*back, got[i]) || back->id != "chatcmpl-fuzz" || back->model != "m") std::abort();
    }
  }
  modelux::wire::AnthropicStreamEncoder enc("msg_fuzz", "m");
  std::string events;
  for (const auto& c : a) enc.add(c, events);
  enc.finish(events);
  if (events.find("event: message_stop") == std::string::npos) std::abort();  // every stream is closed
  return 0;
}
