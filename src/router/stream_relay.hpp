// Internal: one attempt's exchange with its provider — encode, send, read the rate-limit
// headers, decode — and, for streams, the relay of chunks to the caller.
//
// A stream's chunks are held until one carries output, so that a failure before the caller saw
// anything still fails over transparently. Every write goes through a GatedSink, which says
// whether this attempt may still write (it owns the response) or must stop: an attempt that
// lost the race, was expired or was cancelled closes its upstream connection at once and
// never writes another byte.
//
// Timers: before the first output the attempt's deadline and its TTFT timeout bound every
// read; once output reached the caller only the stall timeout does (a delivering stream is
// never cut by a routing timeout).
//
// Threading: runs as a coroutine on the request's strand.
#pragma once

#include <functional>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "modelux/policy.hpp"
#include "modelux/router.hpp"
#include "modelux/transport.hpp"
#include "router/attempt.hpp"

namespace modelux {

/// What happened to one chunk handed to a GatedSink.
enum class SinkVerdict : std::uint8_t {
  written,      ///< the caller has it
  caller_gone,  ///< the caller went away: stop, the request is cancelled
  not_owner,    ///< another attempt owns the response, or this one was ended: stop, drop it
};
/// The way from one attempt to the caller. admit() says, before each chunk, whether this
/// attempt may write (it owns the response, or becomes its owner now) or must stop; the chunk
/// then goes to the caller's sink, awaited by the relay itself (a gate coroutine around the
/// sink cost a coroutine frame per relayed chunk, one more than Asio's frame cache holds). A
/// sink that returns false means the caller went away: the relay sets *gone.
struct GatedSink {
  std::function<SinkVerdict()> admit;
  const AsyncChunkSink* sink = nullptr;
  bool* gone = nullptr;
  /// Characters of content and tool-call arguments the caller got (a stream cut short records
  /// the tokens it delivered: about 4 characters a token), or null.
  std::size_t* delivered_chars = nullptr;
  explicit operator bool() const noexcept { return admit && sink && *sink; }
  /// After the sink took `c`.
  void delivered(const ChatChunk& c) const noexcept {
    if (!delivered_chars) return;
    for (const auto& ch : c.choices) {
      if (ch.content) *delivered_chars += ch.content->size();
      for (const auto& tc : ch.tool_calls) *delivered_chars += tc.arguments.size();
    }
  }
};

struct RelayArgs {
  const ChatRequest* request = nullptr;
  AttemptTracker* tracker = nullptr;
  Transport* transport = nullptr;
  const Clock* clock = nullptr;
  const GatedSink* sink = nullptr;  ///< null, or a plan that needs the full response: buffered
  std::string_view chunk_id;        ///< the id every relayed chunk carries ("chatcmpl-...")
  Nanos default_stall{0};           ///< used when the plan sets no stall timeout
};

/// Runs the attempt's exchange. Never throws for I/O; cancellation ends it with `cancelled`.
net::awaitable<AttemptEnd> relay_attempt(RelayArgs args);

/// The chunks a non-streamed answer becomes when the caller asked to stream (ensembles and
/// cascades must see whole answers before choosing one).
std::vector<ChatChunk> synthesize_chunks(const ChatResponse& r);

/// "chatcmpl-<request id without its prefix>".
std::string chunk_id_for(std::string_view request_id);

}  // namespace modelux
