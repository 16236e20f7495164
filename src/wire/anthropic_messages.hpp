// Anthropic Messages as a server speaks it: what api.anthropic.com accepts and answers, in
// terms of the unified types. Two users share it: the proxy's Anthropic ingress
// (POST /v1/messages, src/server/anthropic_ingress.cpp) and the mock provider
// (src/testing/native.cpp). The client side (what the router sends to Anthropic) is
// src/wire/anthropic.cpp.
//
// Pure functions and one small per-stream state object; no I/O. Threading: the functions are
// reentrant; an AnthropicStreamEncoder belongs to one stream.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "modelux/wire.hpp"

namespace modelux::wire {

/// A Messages request body → the unified request. Errors name the JSON path of the fault.
/// Sampling fields are taken as given (the mock adds the model-specific checks it imitates).
Result<ChatRequest> anthropic_request_from_native(const Json& body);
/// The unified response → a Messages response body (`message` object).
Json anthropic_response_to_native(const ChatResponse& r);
/// Anthropic's error type for an HTTP status (invalid_request_error, overloaded_error, ...).
std::string_view anthropic_error_type(int status);
/// {"type":"error","error":{"type","message"},"request_id"} (request_id omitted when empty).
Json anthropic_error_body(int status, std::string_view message, std::string_view request_id = {});
/// Anthropic's usage object for a unified usage: input_tokens excludes the cached and
/// cache-written tokens, which get their own fields.
Json anthropic_usage(const Usage& u);

/// An SSE event as text ("event: x\ndata: y\n\n"; no event line when `event` is empty).
std::string sse_event(std::string_view event, std::string_view data);

/// Turns a stream of unified chunks (from any provider family) into Anthropic's event stream:
/// message_start, ping, content_block_start / content_block_delta (text_delta,
/// input_json_delta) / content_block_stop per block, then message_delta (stop_reason and the
/// cumulative usage) and message_stop. Each block is closed before the next opens, as
/// Anthropic does; a tool-call fragment for a block already closed still carries that
/// block's index.
class AnthropicStreamEncoder {
 public:
  /// `known` is the usage known before the first chunk (the mock knows its input tokens up
  /// front; the ingress learns usage only at the end).
  AnthropicStreamEncoder(std::string id, std::string model, Usage known = {});
  /// Appends the events `c` gives (message_start before the first).
  void add(const ChatChunk& c, std::string& out);
  /// Appends the closing events. Call once, after the last chunk.
  void finish(std::string& out);
  /// The stop reason finish() reports (mapped from the last finish_reason seen).
  std::string_view stop_reason() const noexcept;

 private:
  void start(std::string& out);
  void close_block(std::string& out);
  std::string id_, model_;
  Usage usage_;
  std::string finish_ = "stop";
  bool started_ = false;
  enum class Open : std::uint8_t { none, text, tool } open_ = Open::none;
  int next_index_ = 0;
  int open_index_ = -1;
  std::vector<int> tool_block_;  ///< unified tool-call index → block index (-1: not opened)
};

}  // namespace modelux::wire
