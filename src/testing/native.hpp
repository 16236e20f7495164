// The mock provider's per-family wire layer: recognises every provider's API path, decodes the
// native request body well enough to answer it, and renders native success bodies, streams and
// errors. The HTTP server (server.cpp) and fault injection sit on top of this.
//
// Threading: every function is pure and thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelux/core.hpp"
#include "modelux/testing.hpp"
#include "modelux/wire.hpp"

namespace modelux::mock {

struct Rendered {
  int status = 200;
  std::string content_type;
  Headers headers;
  std::string body;
};

struct MockRequest {
  std::string family;  ///< openai | mistral | azure | anthropic | gemini | cohere | bedrock
  std::string model;   ///< from the body, or the path (Gemini, Bedrock, Azure deployment)
  bool stream = false;
  ChatRequest request;
  /// Set when the provider itself would refuse this request (Mistral: 422 for a field it does not
  /// know); the mock answers with it instead of an answer.
  std::optional<Rendered> refusal;
};

/// Recognises a provider API path (+query, e.g. Gemini's ?alt=sse, Azure's ?api-version=) and
/// decodes the native body well enough to answer (model, stream flag, messages, tools).
/// Unknown path -> ErrorKind::not_found; bad body -> bad_request.
/// Mistral shares OpenAI's path, so a request on an OpenAI path whose model is one of Mistral's
/// (mistral-*, open-mistral*, codestral*, devstral*, magistral*, ministral*, pixtral*) is served
/// as Mistral: fields Mistral's API does not know are refused with its 422, and streams report
/// usage on the finish chunk whether or not it was asked for.
Result<MockRequest> parse_request(std::string_view method, std::string_view target, const Headers& headers,
                                  std::string_view body);

/// The family whose error shape a request to `target` gets when parse_request refuses it
/// ("openai" for paths no provider has).
std::string_view family_of_target(std::string_view target);

/// Native success body.
Rendered render_response(std::string_view family, const ChatResponse& r);
/// Each element one complete native event/frame, in order. `chunks` is how many pieces the
/// text (or tool arguments) is split in; `include_usage` matters only where the client asks for
/// it (OpenAI family); the other families (Mistral too) always report usage in their stream.
std::vector<std::string> render_stream(std::string_view family, const ChatResponse& r, int chunks,
                                       bool include_usage);
/// text/event-stream, or application/vnd.amazon.eventstream for Bedrock.
std::string_view stream_content_type(std::string_view family);
/// Native error body + retry headers (retry-after, retry-after-ms, and the family's own).
Rendered render_error(std::string_view family, int status, std::string_view message,
                      std::optional<Millis> retry_after);

/// The answer the mock gives to `req`: a tool call to the first tool (arguments
/// `b.tool_arguments`) when the request carries tools and does not forbid them, else `b.text`.
/// Usage is estimated from the request's characters so it is non-zero and deterministic, plus
/// the behavior's cache tokens.
ChatResponse canned_response(const MockRequest& req, const Behavior& b);
/// The same with default behavior and `text`.
ChatResponse canned_response(const MockRequest& req, std::string_view text);

// ---- embeddings (src/testing/embeddings_server.cpp) -------------------------------------------

/// An embeddings request as a provider received it.
struct MockEmbedRequest {
  std::string family;  ///< openai | mistral | azure | gemini | cohere | bedrock
  std::string model;
  std::vector<std::string> texts;  ///< token-id inputs appear as "tokens:1,2,"
  std::int64_t dims = 0;           ///< requested size; 0 = the default (8)
  bool gemini_single = false;      ///< :embedContent rather than :batchEmbedContents
  bool bedrock_titan = false;      ///< Titan's one-text body
  bool cohere_by_type = false;     ///< Cohere on Bedrock asked for embedding_types
  std::optional<Rendered> refusal; ///< Mistral's 422 for a field it does not know
};

/// Recognises an embeddings path of any family and decodes its native body; nullopt when the
/// path is not an embeddings endpoint (the chat paths are then tried).
std::optional<Result<MockEmbedRequest>> parse_embedding_request(std::string_view method, std::string_view target,
                                                                std::string_view body);
/// The family's native embeddings answer (deterministic unit vectors).
Rendered render_embedding_response(const MockEmbedRequest& r);
/// The mock's vector for `text`: `dims` values (8 when 0), unit length, deterministic.
std::vector<float> mock_vector(std::string_view text, std::int64_t dims);
/// OpenAI's embeddings request body, as the mock parses it.
Result<EmbeddingRequest> embedding_request_from_json_for_mock(const Json& j);

}  // namespace modelux::mock
