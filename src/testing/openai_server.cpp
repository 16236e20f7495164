// Server side of the OpenAI format (also Azure and every compatible provider): a unified
// response rendered as the chunks a provider would stream. Used by the mock provider and by
// round-trip tests of the stream decoders.
#include "testing/server_codecs.hpp"

namespace modelux::wire {

std::vector<ChatChunk> response_to_chunks(const ChatResponse& r, int chunks, bool include_usage) {
  std::vector<ChatChunk> out;
  auto base = [&] {
    ChatChunk c;
    c.id = r.id;
    c.model = r.model;
    c.created = r.created;
    return c;
  };
  for (const auto& ch : r.choices) {
    {
      ChatChunk c = base();
      ChunkChoice cc;
      cc.index = ch.index;
      cc.role = "assistant";
      cc.content = std::string{};
      c.choices.push_back(std::move(cc));
      out.push_back(std::move(c));
    }
    std::string text = ch.message.text();
    if (!text.empty()) {
      for (auto& piece : split_text(text, chunks)) {
        ChatChunk c = base();
        ChunkChoice cc;
        cc.index = ch.index;
        cc.content = std::move(piece);
        c.choices.push_back(std::move(cc));
        out.push_back(std::move(c));
      }
    }
    for (std::size_t t = 0; t < ch.message.tool_calls.size(); ++t) {
      const auto& call = ch.message.tool_calls[t];
      ChatChunk first = base();
      ChunkChoice fc;
      fc.index = ch.index;
      ToolCallDelta d;
      d.index = static_cast<int>(t);
      d.id = call.id;
      d.name = call.name;
      fc.tool_calls.push_back(d);
      first.choices.push_back(std::move(fc));
      out.push_back(std::move(first));
      for (auto& piece : split_text(call.arguments, chunks)) {
        if (piece.empty()) continue;
        ChatChunk c = base();
        ChunkChoice cc;
        cc.index = ch.index;
        ToolCallDelta a;
        a.index = static_cast<int>(t);
        a.arguments = std::move(piece);
        cc.tool_calls.push_back(std::move(a));
        c.choices.push_back(std::move(cc));
        out.push_back(std::move(c));
      }
    }
    ChatChunk fin = base();
    ChunkChoice fcc;
    fcc.index = ch.index;
    fcc.finish_reason = ch.finish_reason.empty() ? "stop" : ch.finish_reason;
    fin.choices.push_back(std::move(fcc));
    out.push_back(std::move(fin));
  }
  if (include_usage) {
    ChatChunk u = base();
    u.usage = r.usage;
    out.push_back(std::move(u));
  }
  return out;
}

std::vector<std::string> openai_stream_events(const ChatResponse& r, int chunks, bool include_usage) {
  std::vector<std::string> out;
  for (const auto& c : response_to_chunks(r, chunks, include_usage)) out.push_back(encode_sse_chunk(c));
  out.emplace_back(kSseDone);
  return out;
}

}  // namespace modelux::wire
