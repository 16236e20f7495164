// Internal declarations shared by the provider codec translation units (src/wire/*.cpp).
//
// Each family has two directions:
//   * the client side (a `Codec`): unified request -> native HTTP request; native response,
//     stream and error -> unified. This is what the router uses.
//   * the server side: native request -> unified; unified response -> native body, stream
//     events and error body. The mock provider speaks every family through these, and the
//     round-trip tests check one direction against the other.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelux/wire.hpp"

namespace modelux {

// ---- client-side codecs (stateless singletons; the registry lists them) -------------------
const Codec& openai_codec();     // src/wire/openai.cpp (OpenAI and every compatible provider)
const Codec& azure_codec();      // src/wire/azure.cpp
const Codec& anthropic_codec();  // src/wire/anthropic.cpp
const Codec& gemini_codec();     // src/wire/gemini.cpp
const Codec& cohere_codec();     // src/wire/cohere.cpp
const Codec& bedrock_codec();    // src/wire/bedrock.cpp

namespace wire {

// ---- small shared helpers (src/wire/codec_util.cpp) ---------------------------------------

/// `data:<mime>;base64,<payload>` split into its parts; nullopt for anything else.
struct DataUri {
  std::string mime;
  std::string data;  ///< still base64
};
std::optional<DataUri> parse_data_uri(std::string_view url);
std::string make_data_uri(std::string_view mime, std::string_view b64);

/// An `unsupported` error naming the request field the target cannot honour.
std::unexpected<Error> unsupported_field(std::string_view family, std::string_view field,
                                         std::string_view why = {});
/// A `malformed_response` error.
std::unexpected<Error> malformed(std::string_view family, std::string message);

/// Joins a base URL and a path without doubling or dropping the slash.
std::string join_url(std::string_view base, std::string_view path);

/// Percent-encodes everything outside RFC 3986 unreserved characters.
std::string percent_encode(std::string_view s);
std::string percent_decode(std::string_view s);

/// The tool call arguments string as a JSON object; `{}` for an empty string. Errors name
/// the field path.
Result<Json> arguments_object(const std::string& arguments, const std::string& path);

/// Reads JSON values leniently (absent, null or wrong type -> the fallback).
std::string jstr(const Json& j, std::string_view key, std::string_view fallback = {});
/// j[key] when j is an object and it is a boolean, else `fallback` (never throws).
bool jbool(const Json& j, std::string_view key, bool fallback = false);
std::int64_t jint(const Json& j, std::string_view key, std::int64_t fallback = 0);
/// A JSON number as int64 without undefined behaviour: floats are truncated and clamped to the
/// int64 range, NaN is nullopt, unsigned values above INT64_MAX clamp (providers send odd types).
std::optional<std::int64_t> json_int64(const Json& v);
const Json* jobj(const Json& j, std::string_view key);   // object member or nullptr
const Json* jarr(const Json& j, std::string_view key);   // array member or nullptr

/// `text` split in `n` roughly equal pieces (at least one piece; pieces never split a UTF-8
/// sequence).
std::vector<std::string> split_text(std::string_view text, int n);

/// Error from a provider error body's message plus the shared status/header classification.
/// `provider_type` is the provider's own error type/code, kept in Error::code.
Error provider_error(std::string_view family, int status, const Headers& headers,
                     std::string message, std::string provider_type);

/// True when the error code or message says the prompt was too long.
bool looks_like_context_length(std::string_view code, std::string_view message);

/// Anthropic pieces shared by the client and server sides (src/wire/anthropic.cpp).
inline constexpr std::string_view kJsonTool = "json_response";  ///< forced tool used for JSON mode
std::string_view finish_from_stop_reason(std::string_view stop_reason);
std::string_view stop_reason_from_finish(std::string_view finish_reason);
Error anthropic_error_from(std::string_view type, std::string message, int status, const Headers& headers);
Result<ChatResponse> anthropic_response_from_native(const Json& body);

/// Time until the Anthropic rate-limit window resets: the earliest `anthropic-ratelimit-*-reset`
/// (RFC 3339) minus the response's `date` header; nullopt without both (src/wire/ratelimits.cpp).
std::optional<Millis> anthropic_reset_delay(const Headers& headers);
/// RFC 3339 ("2025-08-21T12:40:59Z", fractional seconds and offsets allowed) and IMF-fixdate
/// ("Sun, 06 Nov 1994 08:49:37 GMT") as milliseconds since the Unix epoch.
std::optional<std::int64_t> parse_rfc3339_ms(std::string_view s);
std::optional<std::int64_t> parse_http_date_ms(std::string_view s);

/// A Bedrock runtime request: POST {base}/model/{id}/{action} (converse, converse-stream,
/// invoke), signed with SigV4 when options.secret_access_key is set, else with the Bedrock API
/// key as Bearer (src/wire/bedrock.cpp).
HttpRequestSpec bedrock_request(const ProviderEndpoint& ep, std::string_view upstream_model, std::string_view action,
                                std::string body, bool event_stream);

// ---- AWS event-stream framing (src/wire/eventstream.cpp) ------------------------------------

/// CRC-32 (IEEE 802.3 / zlib polynomial), continuing from `crc`.
std::uint32_t crc32(std::string_view data, std::uint32_t crc = 0) noexcept;

/// One decoded event-stream message. Header values of string/bytes type are kept as is; the
/// other types are rendered as decimal text ("true"/"false" for booleans, hex for uuids).
struct EventStreamMessage {
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload;
  const std::string* header(std::string_view name) const noexcept;
};

/// Incremental decoder of application/vnd.amazon.eventstream; correct for any split of the
/// input, bounded (a message may not exceed max_message_bytes), both CRCs checked.
class EventStreamParser {
 public:
  explicit EventStreamParser(std::size_t max_message_bytes = 16 * 1024 * 1024) : max_(max_message_bytes) {}
  Result<void> feed(std::string_view bytes, std::vector<EventStreamMessage>& out);
  bool has_partial() const noexcept { return !buf_.empty(); }

 private:
  std::size_t max_;
  std::string buf_;
};

/// Encodes one message with string-typed (type 7) headers.
std::string encode_event_stream_message(const std::vector<std::pair<std::string, std::string>>& headers,
                                        std::string_view payload);

// ---- AWS Signature Version 4 (src/wire/sigv4.cpp) ------------------------------------------

std::string sha256_hex(std::string_view data);
/// Raw HMAC-SHA256 bytes.
std::string hmac_sha256(std::string_view key, std::string_view data);
std::string to_hex(std::string_view bytes);
/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request"), raw bytes.
std::string sigv4_signing_key(std::string_view secret, std::string_view date, std::string_view region,
                              std::string_view service);

struct SigV4Request {
  std::string method;
  std::string canonical_uri;    ///< already in canonical (encoded) form
  std::string query;            ///< raw query "b=2&a=1" (sorted and encoded while signing)
  Headers headers;              ///< headers to sign (host, x-amz-date, ...); names any case
  std::string payload_sha256;   ///< hex; sha256_hex(body)
};
struct SigV4Credentials {
  std::string access_key_id, secret_access_key, region, service;
};
struct SigV4Signature {
  std::string canonical_request, string_to_sign, signed_headers, signature, authorization;
};
/// Signs per SigV4; `amz_date` is "YYYYMMDDTHHMMSSZ".
SigV4Signature sigv4_sign(const SigV4Request& req, const SigV4Credentials& cred, std::string_view amz_date);

// ---- the plain OpenAI request without a JSON DOM (src/wire/openai_direct.cpp) -------------

/// The caller's body read straight into a ChatRequest when it has only the common fields
/// (model, messages with string content, sampling scalars, stop, stream, stream_options, user)
/// and is valid; the same ChatRequest parse_chat_request's DOM path gives. nullopt: use that path.
std::optional<ChatRequest> read_plain_chat_request(std::string_view body, const ParseLimits& limits);
/// The OpenAI upstream body (non-Mistral) for such a request with `model` in place, the same
/// bytes as the encoder's DOM path; nullopt when the request has anything else.
std::optional<std::string> openai_body_direct(const ChatRequest& r, std::string_view model);

}  // namespace wire
}  // namespace modelux
