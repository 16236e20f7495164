// Internal: relaying an OpenAI-format stream to an OpenAI-format caller byte for byte.
//
// When the provider already speaks the caller's format, a chunk does not need a DOM parse and
// a re-encode: the relay decoder scans each event for what the router needs (usage, finish,
// errors, the text for the trace) and keeps the event's bytes with the caller's id and model
// in place of the provider's. The router hands those bytes to the caller's sink alongside the
// chunk through RelayedEvent, so the public chunk types stay as they are.
//
// Threading: a decoder belongs to one attempt. RelayedEvent is thread-local and lives only
// across one synchronous hand-off (see below).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "modelux/wire.hpp"

namespace modelux {

/// A StreamDecoder that also yields, per chunk, the caller's SSE event when it could be
/// relayed as received.
class RelayStreamDecoder : public StreamDecoder {
 public:
  /// One entry per chunk appended to `out` by the last feed(), in order (finish() appends no
  /// chunk and leaves them): the event
  /// ("data: {...}\n\n") with the caller's id and model, or "" for a chunk that went through
  /// the full decode (tool calls, usage, anything unusual) and must be re-encoded.
  virtual const std::vector<std::string>& events() const noexcept = 0;
};

/// OpenAI's stream decoder in relay mode (OpenAI and Azure providers relayed to an OpenAI
/// caller). Chunks come out with `chunk_id` and `model` set, decoded exactly as by
/// openai_codec().stream_decoder().
std::unique_ptr<RelayStreamDecoder> openai_relay_decoder(std::string_view chunk_id, std::string_view model);

/// Hands a chunk's relayed event to the sink it is being given to. The relay constructs one
/// right before `co_await sink(chunk)`; the sink reads it with take() before its first
/// suspension (the hand-off runs synchronously on one thread up to there). take() answers only
/// for the very chunk object it was set for, and only once; anything else gets "".
class RelayedEvent {
 public:
  RelayedEvent(const ChatChunk& c, std::string_view event) noexcept;
  ~RelayedEvent();
  RelayedEvent(const RelayedEvent&) = delete;
  RelayedEvent& operator=(const RelayedEvent&) = delete;
  /// The event set for `c`, or "" (then encode the chunk).
  static std::string_view take(const ChatChunk& c) noexcept;

 private:
  const ChatChunk* chunk_;
};

}  // namespace modelux
