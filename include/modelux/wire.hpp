// modelux wire: the unified chat types (OpenAI Chat Completions is the lingua franca) and the
// provider codecs that translate them to and from each provider's native wire format.
//
// Codecs are pure: bytes in, values out. They never do I/O, so every one of them is fuzzable
// and testable from fixtures.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "modelux/core.hpp"

namespace modelux {

using Json = nlohmann::json;

/// One part of a message's content.
struct ContentPart {
  enum class Type : std::uint8_t { text, image_url, input_audio, file };
  Type type = Type::text;
  std::string text;         ///< text
  std::string url;          ///< image_url.url (https or data: URI)
  std::string detail;       ///< image_url.detail
  Json data;                ///< input_audio / file payload as given
  Json cache_control;       ///< Anthropic-style cache breakpoint, passed through (null when absent)
};

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  ///< JSON-encoded string, as in OpenAI
};

struct Message {
  std::string role;                 ///< system | developer | user | assistant | tool
  std::vector<ContentPart> content; ///< empty with content_null for an assistant tool-call turn
  bool content_is_string = true;    ///< the caller sent a plain string (round-trips exactly)
  bool content_null = false;        ///< content was null / absent
  std::string name;
  std::string tool_call_id;         ///< for role == tool
  std::vector<ToolCall> tool_calls; ///< for role == assistant
  std::optional<std::string> refusal;

  /// Concatenated text parts.
  std::string text() const;
  static Message user(std::string text);
  static Message system(std::string text);
  static Message assistant(std::string text);
};

struct Tool {
  std::string name;
  std::string description;
  Json parameters;      ///< JSON schema (object)
  bool strict = false;
  Json cache_control;   ///< passthrough for Anthropic
};

/// Token counts added without overflow: a provider may report any number (a hostile or broken
/// one reports 2^63 - 1), and a signed overflow is undefined behaviour. Saturates at the limits.
inline std::int64_t add_tokens(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
  return r;
}

struct Usage {
  std::int64_t prompt_tokens = 0;       ///< all input tokens, including cached ones
  std::int64_t completion_tokens = 0;   ///< all output tokens, including reasoning
  std::int64_t cached_tokens = 0;       ///< input tokens read from the provider's cache
  std::int64_t cache_write_tokens = 0;  ///< input tokens written to the cache (Anthropic, Bedrock)
  std::int64_t reasoning_tokens = 0;
  std::int64_t total() const noexcept { return add_tokens(prompt_tokens, completion_tokens); }
  bool empty() const noexcept { return prompt_tokens == 0 && completion_tokens == 0; }
};

/// A chat request in the unified (OpenAI Chat Completions) shape.
struct ChatRequest {
  std::string model;
  std::vector<Message> messages;
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<std::int64_t> max_tokens;  ///< max_completion_tokens or max_tokens
  bool max_tokens_is_completion = false;   ///< the caller used max_completion_tokens
  std::vector<std::string> stop;
  std::optional<std::int64_t> n;
  std::optional<std::int64_t> seed;
  bool stream = false;
  bool include_usage = false;              ///< stream_options.include_usage
  std::vector<Tool> tools;
  Json tool_choice;                        ///< null | "auto" | "none" | "required" | {type,function}
  std::optional<bool> parallel_tool_calls;
  Json response_format;                    ///< null | {type: text|json_object|json_schema, ...}
  std::string user;
  Json metadata;                           ///< the caller's metadata object (null when absent)
  Json extra;                              ///< every other top-level field, passed through (object or null)
};

struct Choice {
  int index = 0;
  Message message;
  std::string finish_reason;  ///< stop | length | tool_calls | content_filter
};

/// A provider's answer as received, when it is already in the caller's (OpenAI) shape: an
/// OpenAI-speaking server sends these bytes with its own id and model spliced in, instead of
/// re-encoding the decoded response (the decode still fills every field of ChatResponse).
struct RelayedBody {
  std::string json;  ///< the provider's body; empty when the answer was decoded from another shape
  std::size_t id_begin = 0, id_end = 0;        ///< the "id" value (a JSON string, quotes included)
  std::size_t model_begin = 0, model_end = 0;  ///< the "model" value
  bool empty() const noexcept { return json.empty(); }
  /// The body with `id` and `model` (plain strings, quoted here) in place of the provider's.
  std::string with(std::string_view id, std::string_view model) const;
};

struct ChatResponse {
  std::string id;
  std::string model;
  std::int64_t created = 0;
  std::vector<Choice> choices;
  Usage usage;
  std::string system_fingerprint;
  /// Set by the relay decode of an OpenAI-format provider (see RelayedBody); empty otherwise.
  RelayedBody relayed;

  /// Text of the first choice ("" if none).
  std::string text() const;
};

/// A streamed tool-call fragment (OpenAI delta shape).
struct ToolCallDelta {
  int index = 0;
  std::string id;         ///< set on the first fragment only
  std::string name;       ///< set on the first fragment only
  std::string arguments;  ///< a substring of the arguments
};

struct ChunkChoice {
  int index = 0;
  std::string role;                  ///< set on the first delta only
  std::optional<std::string> content;
  std::vector<ToolCallDelta> tool_calls;
  std::string finish_reason;         ///< empty until the end
};

/// One streamed chunk in the unified shape (chat.completion.chunk).
struct ChatChunk {
  std::string id;
  std::string model;
  std::int64_t created = 0;
  std::vector<ChunkChoice> choices;
  std::optional<Usage> usage;
  /// The caller's SSE event for this chunk ("data: {...}\n\n") when the provider's event was
  /// relayed as received (an OpenAI-format provider: its bytes with this chunk's id and model);
  /// empty when the chunk must be encoded. An OpenAI-speaking sink writes it as is.
  std::string sse;
  /// Another chunk of the same upstream read follows at once: a sink may hold this one and
  /// write both together (one send instead of two). The last chunk of a read has it false.
  bool more = false;
};

// ---- OpenAI JSON (the unified shape) --------------------------------------------------------

/// Limits applied when parsing untrusted JSON.
struct ParseLimits {
  std::size_t max_bytes = 32 * 1024 * 1024;
  int max_depth = 64;
};

/// Parses a Chat Completions request body. Errors name the JSON path of the fault.
Result<ChatRequest> parse_chat_request(std::string_view body, const ParseLimits& limits = {});
Result<ChatRequest> chat_request_from_json(const Json& j);
Json to_json(const ChatRequest& r);
Json to_json(const Message& m);
Json to_json(const ChatResponse& r);
Json to_json(const ChatChunk& c);
Json to_json(const Usage& u);
Result<Message> message_from_json(const Json& j, const std::string& path);
Result<ChatResponse> chat_response_from_json(const Json& j);
Result<ChatChunk> chat_chunk_from_json(const Json& j);
Usage usage_from_openai_json(const Json& j);

/// Parses JSON with a depth limit; a clear error instead of an exception.
Result<Json> parse_json(std::string_view text, const ParseLimits& limits = {});

/// "data: {...}\n\n" for a chunk; "data: [DONE]\n\n" is kSseDone.
std::string encode_sse_chunk(const ChatChunk& c);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

/// OpenAI's error body: {"error":{"message","type","param","code"}}.
Json openai_error_json(const Error& e);
/// OpenAI's error "type" for a kind (invalid_request_error, authentication_error, ...).
std::string_view openai_error_type(ErrorKind kind) noexcept;

/// Folds a stream of chunks into one response (what a non-streaming caller would have seen).
class ChunkAccumulator {
 public:
  void add(const ChatChunk& c);
  ChatResponse finish() const;
  bool saw_finish() const noexcept { return saw_finish_; }
  std::size_t chunk_count() const noexcept { return chunks_; }

 private:
  ChatResponse r_;
  std::vector<std::vector<ToolCall>> calls_;
  bool saw_finish_ = false;
  std::size_t chunks_ = 0;
};

// ---- Incremental SSE framing ------------------------------------------------------------------

struct SseEvent {
  std::string event;  ///< "" when the stream sends only data lines
  std::string data;   ///< data lines joined with \n
};

/// Splits a byte stream into SSE events; correct for any split of the input. Bounded: an event
/// larger than max_event_bytes is an error.
class SseParser {
 public:
  explicit SseParser(std::size_t max_event_bytes = 4 * 1024 * 1024) : max_event_(max_event_bytes) {}
  /// Appends bytes; complete events are pushed to `out`.
  Result<void> feed(std::string_view bytes, std::vector<SseEvent>& out);
  /// Like feed(), but hands each complete event to `on_event(SseEvent&) -> Result<void>` as it
  /// completes, straight out of the parser's buffers, which are then reused: a steady stream
  /// allocates nothing per event (feed() moves each event out, so the next one allocates).
  /// The event is valid only during the call; an error from `on_event` stops the feed and is
  /// returned.
  template <class F>
  Result<void> feed_each(std::string_view bytes, F&& on_event) {
    using Fn = std::remove_reference_t<F>;
    return feed_impl(bytes, [](void* f, SseEvent& ev) -> Result<void> { return (*static_cast<Fn*>(f))(ev); },
                     const_cast<void*>(static_cast<const void*>(&on_event)));
  }
  /// True while a partial event is buffered.
  bool has_partial() const noexcept { return !line_.empty() || !cur_.data.empty() || !cur_.event.empty(); }

 private:
  using EventFn = Result<void> (*)(void*, SseEvent&);
  Result<void> feed_impl(std::string_view bytes, EventFn fn, void* ctx);
  Result<void> line(std::string_view l, EventFn fn, void* ctx);
  std::size_t max_event_;
  std::string line_;
  SseEvent cur_;
  bool has_data_ = false;
  bool last_cr_ = false;
};

// ---- Provider codecs ------------------------------------------------------------------------

/// Where and how to reach one provider: what the codec needs to build a native request.
struct ProviderEndpoint {
  std::string name;       ///< "openai", "anthropic", "my-azure"...
  std::string family;     ///< codec family: openai | azure | anthropic | gemini | cohere | bedrock
  std::string base_url;   ///< e.g. "https://api.openai.com/v1"
  std::string api_key;    ///< never logged
  std::map<std::string, std::string> options;  ///< family-specific (api_version, region, secret_key...)
};

using Headers = std::vector<std::pair<std::string, std::string>>;

/// Case-insensitive header lookup; nullptr when absent.
const std::string* find_header(const Headers& h, std::string_view name) noexcept;

/// An HTTP request, ready to send.
struct HttpRequestSpec {
  std::string method = "POST";
  std::string url;  ///< absolute
  Headers headers;
  std::string body;
};

/// Incremental decoder of one provider's stream into unified chunks. Correct for any split
/// of the bytes; bounded in memory.
class StreamDecoder {
 public:
  virtual ~StreamDecoder() = default;
  /// Feeds bytes; decoded chunks are appended to `out`. An error event in the stream
  /// (e.g. Anthropic `event: error`) is returned as an Error.
  virtual Result<void> feed(std::string_view bytes, std::vector<ChatChunk>& out) = 0;
  /// The connection closed. An error if the stream ended before its proper end.
  virtual Result<void> finish(std::vector<ChatChunk>& out) = 0;
  /// True once the provider's end-of-stream marker was seen.
  virtual bool done() const noexcept = 0;
  /// Takes back chunks that feed() produced and the caller is done with (it clears `used`): a
  /// decoder may reuse their buffers for the next chunks, so a relayed stream allocates
  /// nothing per chunk. Optional for callers; the default just drops them.
  virtual void recycle(std::vector<ChatChunk>& used) { used.clear(); }
};

/// Translates between the unified shape and one provider family's wire format.
class Codec {
 public:
  virtual ~Codec() = default;
  virtual std::string_view family() const noexcept = 0;
  /// Unified request → native HTTP request for `upstream_model`. A request feature the
  /// provider cannot honour is an `unsupported` error naming the field.
  virtual Result<HttpRequestSpec> encode_request(const ChatRequest& req, const ProviderEndpoint& ep,
                                                 std::string_view upstream_model) const = 0;
  /// Native success body → unified response.
  virtual Result<ChatResponse> decode_response(std::string_view body) const = 0;
  /// Native error (status, headers, body) → Error with kind, retry-after and code.
  virtual Error decode_error(int status, const Headers& headers, std::string_view body) const = 0;
  /// A fresh incremental stream decoder.
  virtual std::unique_ptr<StreamDecoder> stream_decoder() const = 0;
};

/// The codec for a family name; nullptr for an unknown family. Codecs are stateless singletons.
const Codec* find_codec(std::string_view family) noexcept;

/// Registers a codec (called by each family's translation unit at start-up). Thread-unsafe:
/// call before serving.
void register_codec(const Codec* codec);

/// Shared error classification from an HTTP status and the retry headers (retry-after-ms,
/// retry-after seconds or HTTP date, x-ratelimit-reset-*). Codecs refine kind/code from the body.
Error classify_http_error(int status, const Headers& headers, std::string message);

// ---- Embeddings ---------------------------------------------------------------------------
// OpenAI's POST /v1/embeddings is the unified shape; each family's embedding endpoint is
// reached through encode_embedding_request / decode_embedding_response (src/wire/embeddings.cpp).

/// An embeddings request in OpenAI's shape. Exactly one of `texts` and `tokens` is non-empty.
struct EmbeddingRequest {
  std::string model;
  std::vector<std::string> texts;                 ///< `input` as a string or an array of strings
  std::vector<std::vector<std::int64_t>> tokens;  ///< `input` as token ids (one array, or an array of arrays)
  std::optional<std::int64_t> dimensions;         ///< output size, for models that can shorten vectors
  bool base64 = false;                            ///< encoding_format "base64": the caller's answer encoding
  std::string user;
  Json extra;  ///< other top-level fields, passed where a family knows them (input_type, task_type), else object or null
  /// Number of inputs.
  std::size_t size() const noexcept { return texts.empty() ? tokens.size() : texts.size(); }
};

/// The vectors, in input order, and the billed input tokens.
struct EmbeddingResponse {
  std::string model;
  std::vector<std::vector<float>> data;
  Usage usage;  ///< prompt_tokens (completion_tokens is always 0)
};

/// Limits of the unified request (OpenAI's own): at most 2048 inputs.
inline constexpr std::size_t kMaxEmbeddingInputs = 2048;

/// Parses an OpenAI embeddings request body; errors name the JSON path of the fault.
Result<EmbeddingRequest> parse_embedding_request(std::string_view body, const ParseLimits& limits = {});
/// The OpenAI request body (float encoding: modelux encodes base64 itself for the caller).
Json to_json(const EmbeddingRequest& r);
/// The OpenAI response body: {"object":"list","data":[{"object":"embedding","index","embedding"}],"model","usage"};
/// with `base64`, each embedding is the base64 of its little-endian float32 values.
std::string encode_embedding_response(const EmbeddingResponse& r, bool base64);
/// Base64 of little-endian float32 values (OpenAI's encoding_format "base64").
std::string base64_floats(const std::vector<float>& v);
/// Inverse of base64_floats; nullopt for bad base64 or a length that is not a multiple of 4 bytes.
std::optional<std::vector<float>> floats_from_base64(std::string_view b64);
/// Rough input token estimate (4 characters a token; a token id is a token). Budget reservations,
/// and usage for providers that report none (Gemini).
std::int64_t estimate_embedding_tokens(const EmbeddingRequest& r) noexcept;

/// Unified embeddings request -> the family's native HTTP request (openai and the compatible
/// providers incl. Mistral, azure, gemini, cohere, bedrock). What the target cannot honour is an
/// `unsupported` error naming the field (e.g. token-id input outside OpenAI and Azure).
Result<HttpRequestSpec> encode_embedding_request(const EmbeddingRequest& req, const ProviderEndpoint& ep,
                                                 std::string_view upstream_model);
/// The family's native success body -> unified vectors and usage. `req` gives the input count
/// (checked against the answer) and the estimate for providers that report no usage.
Result<EmbeddingResponse> decode_embedding_response(std::string_view family, const EmbeddingRequest& req,
                                                    const Headers& headers, std::string_view body);

/// Parses Go-style durations ("1s", "6m0s", "12ms", "2m59.56s") and plain seconds.
std::optional<Millis> parse_duration(std::string_view s) noexcept;

}  // namespace modelux
