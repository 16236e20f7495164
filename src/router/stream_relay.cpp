// One attempt's exchange with its provider and the relay of a stream (see stream_relay.hpp).
#include "router/stream_relay.hpp"

#include <boost/asio/this_coro.hpp>

#include "wire/codecs.hpp"
#include "wire/openai_relay.hpp"

namespace modelux {

namespace {

std::string ms_text(Nanos d) { return std::to_string(std::chrono::duration_cast<Millis>(d).count()) + " ms"; }

// A chunk "carries output" once the caller would see something of the answer.
bool carries_output(const ChatChunk& c) {
  for (const auto& ch : c.choices)
    if ((ch.content && !ch.content->empty()) || !ch.tool_calls.empty() || !ch.finish_reason.empty()) return true;
  return false;
}

Error stopped_error(SinkVerdict v) {
  if (v == SinkVerdict::caller_gone)
    return error_of(ErrorKind::cancelled, "caller went away mid-stream", true);
  return error_of(ErrorKind::cancelled,
                  "attempt ended: another attempt owns the response, or the routing session ended this one", true);
}

}  // namespace

std::string chunk_id_for(std::string_view request_id) {
  auto us = request_id.find('_');
  return "chatcmpl-" + std::string(us == std::string_view::npos ? request_id : request_id.substr(us + 1));
}

std::vector<ChatChunk> synthesize_chunks(const ChatResponse& r) {
  std::vector<ChatChunk> out;
  for (const auto& choice : r.choices) {
    ChatChunk c;
    c.id = r.id;
    c.model = r.model;
    c.created = r.created;
    ChunkChoice cc;
    cc.index = choice.index;
    cc.role = "assistant";
    cc.content = choice.message.text();
    for (std::size_t i = 0; i < choice.message.tool_calls.size(); ++i) {
      const auto& t = choice.message.tool_calls[i];
      cc.tool_calls.push_back(ToolCallDelta{static_cast<int>(i), t.id, t.name, t.arguments});
    }
    c.choices.push_back(std::move(cc));
    out.push_back(std::move(c));
    ChatChunk fin;
    fin.id = r.id;
    fin.model = r.model;
    fin.created = r.created;
    ChunkChoice fc;
    fc.index = choice.index;
    fc.finish_reason = choice.finish_reason.empty() ? "stop" : choice.finish_reason;
    fin.choices.push_back(std::move(fc));
    out.push_back(std::move(fin));
  }
  ChatChunk u;
  u.id = r.id;
  u.model = r.model;
  u.created = r.created;
  u.usage = r.usage;
  out.push_back(std::move(u));
  return out;
}

net::awaitable<AttemptEnd> relay_attempt(RelayArgs a) {
  AttemptEnd end;
  const AttemptPlan& plan = a.tracker->plan();
  const ChatRequest& req = *a.request;
  const Clock& clock = *a.clock;
  const Instant t0 = clock.now();
  auto failed = [&](Error e) {
    end.answer = std::unexpected(std::move(e));
    end.latency = clock.now() - t0;
  };

  const ProviderConfig* pc = a.tracker->provider();
  const Codec* codec = pc ? find_codec(pc->family) : nullptr;
  if (!codec) {  // start() refuses these; kept so a bad call is an error, never a crash
    failed(error_of(ErrorKind::no_route, "provider '" + plan.target.provider + "' has no codec"));
    co_return end;
  }
  const ProviderEndpoint ep = a.tracker->endpoint();
  const bool stream_mode = req.stream && a.sink && *a.sink && !plan.needs_full_response;
  Result<HttpRequestSpec> spec;
  if (req.stream && !stream_mode) {
    ChatRequest copy = req;
    copy.stream = false;
    copy.include_usage = false;
    spec = codec->encode_request(copy, ep, a.tracker->upstream_model());
  } else {
    spec = codec->encode_request(req, ep, a.tracker->upstream_model());
  }
  if (!spec) {
    failed(std::move(spec.error()));
    co_return end;
  }

  auto opened = co_await a.transport->open(*spec, plan.deadline);
  if (!opened) {
    Error e = std::move(opened.error());
    if (e.kind == ErrorKind::timeout) e.message = "attempt timeout after " + ms_text(clock.now() - t0);
    failed(std::move(e));
    co_return end;
  }
  HttpStream& s = **opened;
  a.tracker->observe_headers(s.headers());
  if (s.status() < 200 || s.status() >= 300) {
    auto body = co_await s.read_all(plan.deadline);
    failed(codec->decode_error(s.status(), s.headers(), body ? *body : std::string{}));
    co_return end;
  }
  if (!stream_mode) {
    auto body = co_await s.read_all(plan.deadline);
    if (!body) {
      Error e = std::move(body.error());
      if (e.kind == ErrorKind::timeout) e.message = "attempt timeout after " + ms_text(clock.now() - t0);
      failed(std::move(e));
      co_return end;
    }
    // An OpenAI-format answer keeps its bytes for an OpenAI caller (ChatResponse::relayed):
    // one scan instead of a DOM parse here and a re-encode at the server.
    std::optional<ChatResponse> relayed;
    if (codec == &openai_codec() || codec == &azure_codec()) relayed = openai_relay_response(std::move(*body));
    Result<ChatResponse> resp = relayed ? Result<ChatResponse>(std::move(*relayed)) : codec->decode_response(*body);
    end.latency = clock.now() - t0;
    end.ttft = end.latency;
    if (resp) end.usage = resp->usage;
    end.answer = std::move(resp);
    co_return end;
  }

  // Streaming.
  const GatedSink& sink = *a.sink;
  // A provider that speaks the caller's format (OpenAI's SSE) is relayed byte for byte: each
  // chunk is scanned for what usage, finish and errors need and keeps its event (ChatChunk::sse)
  // with our id and model, instead of a DOM parse and a re-encode (~10x the CPU per chunk).
  std::unique_ptr<StreamDecoder> decoder = codec == &openai_codec() || codec == &azure_codec()
                                               ? openai_relay_decoder(a.chunk_id, plan.target.model)
                                               : codec->stream_decoder();
  ChunkAccumulator acc;
  std::vector<ChatChunk> chunks, held;
  const Nanos stall = plan.stall_timeout.count() > 0 ? plan.stall_timeout : a.default_stall;
  bool first_output = false;
  const std::int64_t created_now =
      std::chrono::duration_cast<std::chrono::seconds>(clock.wall_now().time_since_epoch()).count();
  // Writes one chunk; on refusal the upstream connection is closed at once (it is never
  // pooled: the body was not read to its end) and the attempt ends.
  auto stop = [&](SinkVerdict v) {
    s.abort();
    failed(stopped_error(v));
    end.delivered = first_output;
    end.usage = acc.finish().usage;
  };
  for (;;) {
    const Instant now = clock.now();
    Instant read_deadline;
    if (first_output) {
      // The stream owns the response: only the gap between chunks bounds it.
      read_deadline = stall.count() > 0 ? now + stall : Instant::max();
    } else {
      read_deadline = plan.deadline;
      if (plan.ttft_timeout.count() > 0) read_deadline = std::min(read_deadline, t0 + plan.ttft_timeout);
    }
    auto piece = co_await s.read_some(read_deadline);
    if (!piece) {
      Error e = std::move(piece.error());
      if (e.kind == ErrorKind::timeout)
        e.message = first_output ? "stream stalled: no data for " + ms_text(stall)
                                 : plan.ttft_timeout.count() > 0 && clock.now() - t0 >= plan.ttft_timeout
                                       ? "no first token within ttft_timeout_ms " + ms_text(plan.ttft_timeout)
                                       : "no first token within " + ms_text(clock.now() - t0);
      if (first_output && !e.local && e.kind != ErrorKind::cancelled) e.kind = ErrorKind::stream_interrupted;
      else if (!first_output && e.kind == ErrorKind::stream_interrupted) e.kind = ErrorKind::connection;  // nothing reached the caller
      failed(std::move(e));
      end.delivered = first_output;
      break;
    }
    const bool at_end = piece->empty();
    std::string_view rest = *piece;
    bool broke = false;
    do {
      // Until the first output, a read is fed one event at a time (the SSE parser is correct
      // for any split), so that the first output goes out before the rest of the read is
      // scanned: a provider that sends the whole answer at once still gets its first token
      // to the caller after one event's work, not all of them.
      std::string_view part = rest;
      if (!first_output) {
        const std::size_t p = rest.find("\n\n");
        if (p != std::string_view::npos) part = rest.substr(0, p + 2);
      }
      rest.remove_prefix(part.size());
      // The chunks of the previous feed go back to the decoder, which reuses their buffers (a
      // relayed OpenAI stream allocates nothing per chunk).
      decoder->recycle(chunks);
      bool ended = at_end;
      Result<void> fed = ended ? decoder->finish(chunks) : decoder->feed(part, chunks);
      if (fed && !ended && decoder->done()) {
        fed = decoder->finish(chunks);  // flush what the decoder holds back until the end (usage)
        ended = true;
      }
      for (std::size_t k = 0; k < chunks.size(); ++k) {
        ChatChunk& c = chunks[k];
        // The chunks of one upstream read go out in one write: the sink may hold all but the
        // last. When the stream ended cleanly with this read, the last is held too: it goes out
        // with the end of the stream (the caller's [DONE]), one write instead of two.
        c.more = k + 1 < chunks.size() || (!ended && !rest.empty()) || (ended && fed);
        if (c.id != a.chunk_id) c.id = a.chunk_id;
        if (c.model != plan.target.model) c.model = plan.target.model;
        if (c.created == 0) c.created = created_now;  // Anthropic, Gemini...: no creation time of their own
        acc.add(c);
        if (!first_output && !carries_output(c) && !c.usage) {
          held.push_back(std::move(c));
          continue;
        }
        if (!first_output) {
          end.ttft = clock.now() - t0;
          for (auto& h : held) {
            h.more = true;  // `c` follows at once
            SinkVerdict v = sink.admit();  // then the caller's sink, awaited here (GatedSink)
            if (v == SinkVerdict::written) {
              if (co_await (*sink.sink)(h)) sink.delivered(h);
              else *sink.gone = true, v = SinkVerdict::caller_gone;
            }
            if (v != SinkVerdict::written) {
              stop(v);
              co_return end;
            }
          }
          held.clear();
          first_output = true;
          c.more = false;  // the first output goes out at once (time to first token)
        }
        SinkVerdict v = sink.admit();  // then the caller's sink, awaited here (GatedSink)
        if (v == SinkVerdict::written) {
          if (co_await (*sink.sink)(c)) sink.delivered(c);
          else *sink.gone = true, v = SinkVerdict::caller_gone;
        }
        if (v != SinkVerdict::written) {
          stop(v);
          co_return end;
        }
      }
      if (!fed) {
        Error e = std::move(fed.error());
        if (first_output && e.kind != ErrorKind::stream_interrupted) {
          e.message = "stream broke after output started: " + e.message;
          e.kind = ErrorKind::stream_interrupted;
        } else if (!first_output && e.kind == ErrorKind::stream_interrupted && e.status == 0) {
          // Nothing reached the caller: fail over. A clean end of a 200 body that was not a
          // complete event stream is the upstream's protocol error; a broken read, a connection's.
          e.kind = ended ? ErrorKind::malformed_response : ErrorKind::connection;
          if (ended) e.message = "upstream's 200 stream is not a complete event stream: " + e.message;
        }
        failed(std::move(e));
        end.delivered = first_output;
        broke = true;
        break;
      }
      if (ended) {
        if (!first_output) {
          // An empty but well-formed stream: deliver what was held, with the end of the stream.
          end.ttft = clock.now() - t0;
          for (auto& h : held) {
            h.more = true;
            SinkVerdict v = sink.admit();  // then the caller's sink, awaited here (GatedSink)
            if (v == SinkVerdict::written) {
              if (co_await (*sink.sink)(h)) sink.delivered(h);
              else *sink.gone = true, v = SinkVerdict::caller_gone;
            }
            if (v != SinkVerdict::written) {
              stop(v);
              co_return end;
            }
          }
          first_output = true;
        }
        ChatResponse r = acc.finish();
        end.usage = r.usage;
        end.answer = std::move(r);
        end.latency = clock.now() - t0;
        end.delivered = true;
        co_return end;
      }
    } while (!rest.empty());
    if (broke) break;
    s.recycle(std::move(*piece));  // the transport reads the next piece into its buffer
  }
  end.usage = acc.finish().usage;  // partial usage of a broken stream, if any
  co_return end;
}

}  // namespace modelux
