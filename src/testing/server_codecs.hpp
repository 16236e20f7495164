// The server side of each provider family's wire format: what a provider's API accepts and
// answers. Part of modelux::testing (the mock provider speaks it), never of the core library,
// which only needs the client side (src/wire/codecs.hpp).
#pragma once

#include "wire/anthropic_messages.hpp"
#include "wire/codecs.hpp"

namespace modelux {
namespace wire {

// ---- server side: each family's native format as a server speaks it -------------------------
// Used by the mock provider (src/testing/native.cpp) and by the round-trip tests.

/// Anthropic Messages: request, response and error translation are the library's
/// (wire/anthropic_messages.hpp, shared with the proxy's ingress); the stream of a whole
/// response as the mock sends it is src/testing/anthropic_server.cpp.
std::vector<std::string> anthropic_stream_events(const ChatResponse& r, int chunks);

/// Gemini generateContent (src/testing/gemini_server.cpp).
Result<ChatRequest> gemini_request_from_native(const Json& body, std::string_view model);
Json gemini_response_to_native(const ChatResponse& r);
std::vector<std::string> gemini_stream_events(const ChatResponse& r, int chunks);
Json gemini_error_body(int status, std::string_view message);

/// Cohere v2 chat (src/testing/cohere_server.cpp).
Result<ChatRequest> cohere_request_from_native(const Json& body);
Json cohere_response_to_native(const ChatResponse& r);
std::vector<std::string> cohere_stream_events(const ChatResponse& r, int chunks);
Json cohere_error_body(int status, std::string_view message);

/// Bedrock Converse (src/testing/bedrock_server.cpp). Stream frames are binary event-stream
/// messages.
Result<ChatRequest> bedrock_request_from_native(const Json& body, std::string_view model);
Json bedrock_response_to_native(const ChatResponse& r);
std::vector<std::string> bedrock_stream_frames(const ChatResponse& r, int chunks);
Json bedrock_error_body(std::string_view message);
std::string_view bedrock_error_type(int status);

/// OpenAI (also Azure and every compatible provider): the unified shape itself
/// (src/testing/openai_server.cpp).
std::vector<std::string> openai_stream_events(const ChatResponse& r, int chunks, bool include_usage);
/// The unified chunks a response streams as (role chunk, text/tool pieces, finish, usage).
std::vector<ChatChunk> response_to_chunks(const ChatResponse& r, int chunks, bool include_usage);

}  // namespace wire
}  // namespace modelux
