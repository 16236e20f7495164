// Internal: relaying an OpenAI-format answer to an OpenAI-format caller byte for byte.
//
// When the provider already speaks the caller's format, an answer does not need a DOM parse
// and a re-encode: the relay decode scans the bytes once for what the router needs (usage,
// finish, errors, the text for the trace and the strategies) and keeps them for the caller:
//  - a stream chunk carries its event in ChatChunk::sse, with the caller's id and model
//    already in place of the provider's;
//  - a whole answer carries its body in ChatResponse::relayed, with the spans of its id and
//    model, which the server replaces with its own (RelayedBody::with).
// Anything the scan does not understand cheaply goes through the full decode, as before.
//
// Threading: a decoder belongs to one attempt; the functions are pure.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "modelux/wire.hpp"

namespace modelux {

/// OpenAI's stream decoder in relay mode (OpenAI and Azure providers relayed to an OpenAI
/// caller). Chunks come out with `chunk_id` and `model` set, decoded exactly as by
/// openai_codec().stream_decoder(); a chunk relayed as received has its event in `sse`.
std::unique_ptr<StreamDecoder> openai_relay_decoder(std::string_view chunk_id, std::string_view model);

/// How many events `decoder` (from openai_relay_decoder) took through its same-shape path: only
/// the content and the members after the choices scanned (tests and benchmarks); 0 for another decoder.
std::size_t openai_relay_same_shape_count(const StreamDecoder& decoder) noexcept;

/// A non-streamed OpenAI chat.completion, decoded as openai_codec().decode_response() would,
/// with `relayed` holding `body`. nullopt when the scan gives up (tool calls, content parts,
/// an error member, anything unusual): then decode_response() judges the body.
std::optional<ChatResponse> openai_relay_response(std::string&& body);

}  // namespace modelux
