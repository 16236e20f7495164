// OpenAI Chat Completions codec: the unified shape is OpenAI's, so encoding is mostly a
// model-name swap; decoding validates and normalises.
#include <array>
#include <cctype>
#include <cstring>

#include "wire/codecs.hpp"
#include "wire/openai_relay.hpp"

namespace modelux {

namespace {

std::string join_url(const std::string& base, std::string_view path) {
  std::string u = base;
  while (!u.empty() && u.back() == '/') u.pop_back();
  u += path;
  return u;
}

// ---- the fast scan of a chunk (the relay path) ------------------------------------------------
//
// Relaying a chunk whose format already matches the caller's should cost a byte scan, not a
// DOM parse and a re-serialisation. ChunkScan walks one chunk's JSON once, checks that it is
// well-formed, and picks out only what the router needs: the spans of the top-level "id" and
// "model" values (replaced by the proxy's), "created", and per choice the index, role,
// content and finish_reason. Anything it does not understand cheaply (tool calls, a non-null
// usage, an error member, x_groq, refusals) makes it answer "slow", and the chunk goes
// through the full decode as before; so does invalid JSON, whose error message is the full
// decoder's.
class ChunkScan {
 public:
  explicit ChunkScan(std::string_view s, std::size_t at = 0) : s_(s), i_(at) {}
  std::size_t pos() const noexcept { return i_; }

  // `chunk` may be one used before (ChunkScan reuses its buffers): run() resets every field
  // it fills except id, model and sse, which the caller sets.
  struct Out {
    explicit Out(ChatChunk& c) : chunk(c) {}
    std::size_t id_b = 0, id_e = 0, model_b = 0, model_e = 0;
    bool has_id = false, has_model = false;
    ChatChunk& chunk;
    std::size_t choices = 0;  // of chunk.choices, filled so far
    // Where the first choice's delta.content string opens and closes (its two '"'), how many
    // content strings the event had, and where the choices array ends: what the relay's
    // same-shape check needs.
    std::size_t content_open = std::string_view::npos, content_close = 0, contents = 0, choices_end = 0;
    bool has_choices = false;
  };

  struct ResponseOut {
    std::size_t id_b = 0, id_e = 0, model_b = 0, model_e = 0;
    bool has_id = false, has_model = false, has_choices = false, has_usage = false;
    ChatResponse resp;
  };

  // A whole (non-streamed) chat.completion: true when `out.resp` holds what
  // chat_response_from_json would give; false: take the slow path (tool calls, content parts,
  // an error member, floats or nulls where numbers belong, duplicate keys...).
  bool run_response(ResponseOut& out) {
    ws();
    std::optional<std::int64_t> cache_hit;
    auto member = [&](std::string_view key) {
      if (is(key, "id") || is(key, "model")) {
        const bool id = is(key, "id");
        if ((id && out.has_id) || (!id && out.has_model)) return false;
        std::size_t b = i_;
        if (peek() != '"' || !string(id ? &out.resp.id : &out.resp.model)) return false;
        if (id) out.id_b = b, out.id_e = i_, out.has_id = true;
        else out.model_b = b, out.model_e = i_, out.has_model = true;
        return true;
      }
      if (is(key, "created")) return integer(out.resp.created);
      if (is(key, "choices")) {
        if (out.has_choices) return false;
        out.has_choices = true;
        return response_choices(out.resp);
      }
      if (is(key, "usage")) {
        if (out.has_usage) return false;
        out.has_usage = true;
        return peek() == 'n' ? null() : usage(out.resp.usage, cache_hit);
      }
      if (is(key, "system_fingerprint")) {
        if (peek() == 'n') return null();
        out.resp.system_fingerprint.clear();
        return string(&out.resp.system_fingerprint);
      }
      if (is(key, "error")) return false;
      return skip();
    };
    if (!members(false, member)) return false;
    ws();
    if (cache_hit) out.resp.usage.cached_tokens = *cache_hit;  // DeepSeek's name for cache hits
    return i_ == s_.size() && out.has_id && out.has_model && out.has_choices;
  }

  // A JSON string at pos() (its opening quote), decoded into `out`: the relay's same-shape path.
  bool string_at(std::string* out) { return string(out); }

  // The rest of a chunk's top-level object after its choices array: more members and the
  // closing brace, then only whitespace. Members the scan of run() reads (id, model, created,
  // choices, usage) or gives up on (error, x_groq) make it false: run() must judge the event.
  bool tail() {
    for (;;) {
      ws();
      if (eat('}')) break;
      if (!eat(',')) return false;
      ws();
      std::string_view key;
      if (!raw_key(key)) return false;
      if (is(key, "id") || is(key, "model") || is(key, "created") || is(key, "choices") || is(key, "usage") ||
          is(key, "error") || is(key, "x_groq"))
        return false;
      ws();
      if (!eat(':')) return false;
      ws();
      if (!skip()) return false;
    }
    ws();
    return i_ == s_.size();
  }

  // true: `out` holds the chunk; false: take the slow path.
  bool run(Out& out) {
    out.chunk.created = 0;
    out.chunk.usage.reset();
    out.chunk.more = false;
    ws();
    unsigned seen = 0;
    auto member = [&](std::string_view key) {
      if ((is(key, "id") && !first_time(seen, 1)) || (is(key, "model") && !first_time(seen, 2)) ||
          (is(key, "created") && !first_time(seen, 4)))
        return false;
      if (is(key, "id") || is(key, "model")) {
        std::size_t b = i_;
        if (peek() != '"' || !string(nullptr)) return false;
        if (is(key, "id")) out.id_b = b, out.id_e = i_, out.has_id = true;
        else out.model_b = b, out.model_e = i_, out.has_model = true;
        return true;
      }
      if (is(key, "created")) return integer(out.chunk.created);
      if (is(key, "choices")) {
        if (out.has_choices) return false;  // a repeated key: the full decoder judges it
        out.has_choices = true;
        out_ = &out;
        const bool ok = choices(out);
        out_ = nullptr;
        out.choices_end = i_;
        return ok;
      }
      if (is(key, "usage")) return null();  // a usage object: the full decoder reads it (once per stream)
      if (is(key, "error") || is(key, "x_groq")) return false;
      return skip();
    };
    // An empty object has no id and no model: let the full decoder judge it.
    const bool ok = members(false, member);
    out.chunk.choices.resize(out.choices);  // the rest of a reused chunk's choices go
    if (!ok) return false;
    ws();
    return i_ == s_.size() && out.has_id && out.has_model;
  }

 private:
  // The bytes that end a run of plain string characters: '"', '\\' and control characters
  // (one table lookup per byte instead of three comparisons).
  static constexpr std::array<bool, 256> kStop = [] {
    std::array<bool, 256> t{};
    for (int c = 0; c < 0x20; ++c) t[static_cast<std::size_t>(c)] = true;
    t['"'] = true;
    t['\\'] = true;
    return t;
  }();
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  // A key against a literal: a length check and a fixed-size compare the compiler inlines
  // (string_view's == called compare and memcmp for every key of equal length).
  template <std::size_t N>
  static bool is(std::string_view k, const char (&lit)[N]) {
    return k.size() == N - 1 && __builtin_memcmp(k.data(), lit, N - 1) == 0;
  }
  static bool digit(char c) { return static_cast<unsigned>(c - '0') < 10u; }
  bool eat(char c) {
    if (peek() != c) return false;
    ++i_;
    return true;
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  bool lit(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool null() { return lit("null"); }
  // A key without escapes (every key the scan cares about); a key with one takes the slow path.
  bool raw_key(std::string_view& key) {
    if (!eat('"')) return false;
    std::size_t b = i_;
    while (i_ < s_.size() && !kStop[static_cast<unsigned char>(s_[i_])]) ++i_;
    if (i_ >= s_.size() || s_[i_] != '"') return false;  // an escape or a control character
    key = s_.substr(b, i_ - b);
    ++i_;
    return true;
  }
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  bool hex4(unsigned& v) {
    if (i_ + 4 > s_.size()) return false;
    v = 0;
    for (int k = 0; k < 4; ++k) {
      int h = hex(s_[i_ + k]);
      if (h < 0) return false;
      v = v * 16 + static_cast<unsigned>(h);
    }
    i_ += 4;
    return true;
  }
  static void utf8(std::string& o, unsigned cp) {
    if (cp < 0x80) o += static_cast<char>(cp);
    else if (cp < 0x800) o += static_cast<char>(0xC0 | (cp >> 6)), o += static_cast<char>(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
      o += static_cast<char>(0xE0 | (cp >> 12)), o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
          o += static_cast<char>(0x80 | (cp & 0x3F));
    else
      o += static_cast<char>(0xF0 | (cp >> 18)), o += static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
          o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), o += static_cast<char>(0x80 | (cp & 0x3F));
  }
  // A JSON string at i_; decoded into `out` when given. Lone surrogates and invalid escapes
  // take the slow path (whose parser has the final word on them).
  bool string(std::string* out) {
    if (!eat('"')) return false;
    for (;;) {
      std::size_t b = i_;
      while (i_ < s_.size() && !kStop[static_cast<unsigned char>(s_[i_])]) ++i_;
      if (out) out->append(s_.data() + b, i_ - b);
      if (i_ >= s_.size() || static_cast<unsigned char>(s_[i_]) < 0x20) return false;
      if (s_[i_] == '"') {
        ++i_;
        return true;
      }
      ++i_;  // backslash
      char e = peek();
      ++i_;
      char c = 0;
      switch (e) {
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
          unsigned cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo = 0;
            if (!lit("\\u") || !hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return false;
          }
          if (out) utf8(*out, cp);
          continue;
        }
        default: return false;
      }
      if (out) *out += c;
    }
  }
  // JSON has no leading zeros ("01" is not a number): the full parser refuses them, so must
  // the scan (found by fuzz_stream's relay check).
  bool leading_zero() const { return peek() == '0' && i_ + 1 < s_.size() && digit(s_[i_ + 1]); }
  bool integer(std::int64_t& v) {
    bool neg = eat('-');
    if (!digit(peek()) || leading_zero()) return false;
    v = 0;
    int digits = 0;
    while (digit(peek())) {
      if (++digits > 18) return false;
      v = v * 10 + (s_[i_++] - '0');
    }
    if (peek() == '.' || peek() == 'e' || peek() == 'E') return false;
    if (neg) v = -v;
    return true;
  }
  bool number() {
    eat('-');
    if (!digit(peek()) || leading_zero()) return false;
    while (digit(peek())) ++i_;
    if (eat('.')) {
      if (!digit(peek())) return false;
      while (digit(peek())) ++i_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      if (!digit(peek())) return false;
      while (digit(peek())) ++i_;
    }
    return true;
  }
  // Any value, checked for well-formedness; nesting is bounded like the full parser's.
  bool skip(int depth = 0) {
    if (depth > 64) return false;
    char c = peek();
    if (c == '"') return string(nullptr);
    if (c == 't') return lit("true");
    if (c == 'f') return lit("false");
    if (c == 'n') return null();
    if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++i_;
      ws();
      if (eat(close)) return true;
      for (;;) {
        ws();
        if (c == '{') {
          if (!string(nullptr)) return false;
          ws();
          if (!eat(':')) return false;
          ws();
        }
        if (!skip(depth + 1)) return false;
        ws();
        if (eat(',')) continue;
        return eat(close);
      }
    }
    return number();
  }
  // One JSON object, member by member: `on_member(key)` reads the value after "key":, and
  // returns false to give up (the full decoder then judges the event). `empty_ok`: whether {}
  // is acceptable.
  template <class OnMember>
  bool members(bool empty_ok, OnMember&& on_member) {
    if (!eat('{')) return false;
    ws();
    if (eat('}')) return empty_ok;
    for (;;) {
      ws();
      std::string_view key;
      if (!raw_key(key)) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      if (!on_member(key)) return false;
      ws();
      if (eat(',')) continue;
      return eat('}');
    }
  }

  bool response_choices(ChatResponse& r) {
    if (!eat('[')) return false;
    ws();
    if (eat(']')) return true;
    for (;;) {
      ws();
      Choice ch;
      ch.index = static_cast<int>(r.choices.size());
      bool has_message = false;
      bool ok = members(true, [&](std::string_view key) {
        if (is(key, "index")) {
          std::int64_t v = 0;
          if (!integer(v) || v < 0 || v > 127) return false;
          ch.index = static_cast<int>(v);
        } else if (is(key, "finish_reason")) {
          if (peek() == 'n') return null();
          ch.finish_reason.clear();
          return string(&ch.finish_reason);
        } else if (is(key, "message")) {
          if (has_message) return false;
          has_message = true;
          return message(ch.message);
        } else if (!skip()) {
          return false;
        }
        return true;
      });
      if (!ok || !has_message) return false;
      r.choices.push_back(std::move(ch));
      ws();
      if (eat(',')) continue;
      return eat(']');
    }
  }
  // An assistant message with plain text (or null) content.
  bool message(Message& m) {
    bool has_role = false, has_content = false;
    m.content_null = true;
    bool ok = members(true, [&](std::string_view key) {
      if (is(key, "role")) {
        if (has_role) return false;
        has_role = true;
        return string(&m.role) && m.role == "assistant";
      }
      if (is(key, "content")) {
        if (has_content) return false;
        has_content = true;
        if (peek() == 'n') return null();
        m.content_null = false;
        std::string& text = m.content.emplace_back().text;
        return string(&text);
      }
      if (is(key, "refusal")) {
        if (peek() == 'n') return null();
        m.refusal.emplace();
        return string(&*m.refusal);
      }
      if (is(key, "annotations")) return skip();
      return null();  // tool_calls, function_call, audio, name...: the full decoder
    });
    if (!has_role) m.role = "assistant";
    return ok;
  }
  // A usage object as usage_from_openai_json reads it; integers only.
  bool usage(Usage& u, std::optional<std::int64_t>& cache_hit) {
    auto details = [&](std::string_view want1, std::int64_t* out1, std::string_view want2, std::int64_t* out2) {
      return members(true, [&](std::string_view key) {
        if (key == want1) return integer(*out1);
        if (out2 && key == want2) return integer(*out2);
        return skip();
      });
    };
    return members(true, [&](std::string_view key) {
      if (is(key, "prompt_tokens")) return integer(u.prompt_tokens);
      if (is(key, "completion_tokens")) return integer(u.completion_tokens);
      if (is(key, "prompt_cache_hit_tokens")) return integer(cache_hit.emplace());
      if (is(key, "prompt_tokens_details"))
        return peek() == 'n' ? null() : details("cached_tokens", &u.cached_tokens, "cache_write_tokens", &u.cache_write_tokens);
      if (is(key, "completion_tokens_details"))
        return peek() == 'n' ? null() : details("reasoning_tokens", &u.reasoning_tokens, {}, nullptr);
      return skip();
    });
  }

  bool choices(Out& out) {
    if (!eat('[')) return false;
    ws();
    if (eat(']')) return true;
    std::vector<ChunkChoice>& v = out.chunk.choices;
    for (;;) {
      ws();
      // A choice of a reused chunk keeps its buffers (no allocation per chunk).
      ChunkChoice& ch = out.choices < v.size() ? v[out.choices] : v.emplace_back();
      ++out.choices;
      ch.index = 0;
      ch.role.clear();
      ch.tool_calls.clear();
      ch.finish_reason.clear();
      content_seen_ = false;
      if (!choice(ch)) return false;
      if (!content_seen_) ch.content.reset();
      ws();
      if (eat(',')) continue;
      return eat(']');
    }
  }
  // A key the scan reads that appears twice in one object takes the full decode (whose parser
  // keeps the last; the scan would merge or append): `seen` holds one bit per key.
  static bool first_time(unsigned& seen, unsigned bit) {
    if (seen & bit) return false;
    seen |= bit;
    return true;
  }
  bool choice(ChunkChoice& ch) {
    unsigned seen = 0;
    return members(true, [&](std::string_view key) {
      if ((is(key, "index") && !first_time(seen, 1)) || (is(key, "finish_reason") && !first_time(seen, 2)) ||
          (is(key, "delta") && !first_time(seen, 4)))
        return false;
      if (is(key, "index")) {
        std::int64_t v = 0;
        if (!integer(v) || v < 0 || v > 127) return false;
        ch.index = static_cast<int>(v);
      } else if (is(key, "finish_reason")) {
        if (peek() == 'n') {
          if (!null()) return false;
        } else if (!string(&ch.finish_reason) || ch.finish_reason == "error") {
          return false;  // OpenRouter's mid-stream failure: the full decoder reports it
        }
      } else if (is(key, "delta")) {
        if (!delta(ch)) return false;
      } else if (!skip()) {
        return false;
      }
      return true;
    });
  }
  bool delta(ChunkChoice& ch) {
    unsigned seen = 0;
    return members(true, [&](std::string_view key) {
      if ((is(key, "role") && !first_time(seen, 1)) || (is(key, "content") && !first_time(seen, 2))) return false;
      if (is(key, "role")) {
        if (peek() == 'n') {
          if (!null()) return false;
        } else if (!string(&ch.role)) {
          return false;
        }
      } else if (is(key, "content")) {
        if (peek() == 'n') {
          if (!null()) return false;
        } else {
          if (ch.content) ch.content->clear();
          else ch.content.emplace();
          content_seen_ = true;
          const bool first = out_ && out_->choices == 1 && out_->contents == 0;
          if (out_) ++out_->contents;
          if (first) out_->content_open = i_;
          if (!string(&*ch.content)) return false;
          if (first) out_->content_close = i_ - 1;
        }
      } else if (!null()) {
        return false;  // tool_calls, refusal, function_call...: the full decoder
      }
      return true;
    });
  }

  std::string_view s_;
  std::size_t i_ = 0;
  bool content_seen_ = false;  // of the choice being scanned
  Out* out_ = nullptr;         // while run() scans the choices
};

std::string json_quoted(std::string_view s) {
  // Ids and model names are plain ASCII: quoted as they are (the dump below costs a JSON value
  // and a serializer, twice per relayed stream and once per relayed answer).
  bool plain = true;
  for (char c : s) plain = plain && c >= 0x20 && c <= 0x7e && c != '"' && c != '\\';
  if (plain) {
    std::string q;
    q.reserve(s.size() + 2);
    q += '"';
    q += s;
    q += '"';
    return q;
  }
  return Json(std::string(s)).dump(-1, ' ', false, Json::error_handler_t::replace);
}

// OpenAI's stream. In relay mode (a chunk id and model given) every chunk it can scan cheaply
// also yields its event for the caller: the upstream's bytes with the id and model replaced.
class OpenAIStreamDecoder final : public StreamDecoder {
 public:
  OpenAIStreamDecoder() = default;
  OpenAIStreamDecoder(std::string_view chunk_id, std::string_view model)
      : relay_(true), id_(chunk_id), model_(model), id_json_(json_quoted(chunk_id)), model_json_(json_quoted(model)) {}

  Result<void> feed(std::string_view bytes, std::vector<ChatChunk>& out) override {
    // Each event is handled as the SSE parser completes it, out of the parser's reused buffers.
    // A framing error (an event over the size bound) leaves no chunk of this feed, as when the
    // events were collected first.
    const std::size_t n0 = out.size();
    const bool done0 = done_;
    bool event_failed = false;
    auto r = sse_.feed_each(bytes, [&](SseEvent& ev) -> Result<void> {
      if (done_) return {};  // anything after [DONE] is ignored
      if (ev.data == "[DONE]") {
        done_ = true;
        return {};
      }
      // Relayed bytes reach the caller as they are: invalid UTF-8 takes the full decode, whose
      // encoder replaces it (as every re-encoded answer always did).
      if (relay_ && ev.event.empty() && relay_fast(ev.data, out)) return {};
      auto rr = slow(ev, out);
      if (!rr) event_failed = true;
      return rr;
    });
    if (!r && !event_failed) {
      while (out.size() > n0) give_back(out);
      done_ = done0;
    }
    return r;
  }
  void recycle(std::vector<ChatChunk>& used) override {
    for (auto& c : used)
      if (spare_.size() < kSpares) spare_.push_back(std::move(c));
    used.clear();
  }
  Result<void> finish(std::vector<ChatChunk>&) override {  // appends no chunk
    if (!done_) return fail(ErrorKind::stream_interrupted, "stream ended before data: [DONE]");
    return {};
  }
  bool done() const noexcept override { return done_; }
  std::size_t same_shape_count() const noexcept { return same_shape_count_; }

 private:
  // The relay's scan of one event: true when `out` got the chunk with its event for the caller
  // (the upstream's bytes with our id and model); false: the full decode judges it.
  bool relay_fast(std::string_view d, std::vector<ChatChunk>& out) {
    if (same_shape(d, out)) return true;
    if (!valid_utf8(d)) return false;
    ChatChunk& c = take(out);
    ChunkScan::Out o(c);
    if (!ChunkScan(d).run(o)) {
      give_back(out);
      shape_.valid = false;
      return false;
    }
    std::string& e = c.sse;
    e.clear();
    e.reserve(d.size() + id_json_.size() + model_json_.size() + 8);
    std::size_t b1 = o.id_b, e1 = o.id_e, b2 = o.model_b, e2 = o.model_e;
    const std::string *r1 = &id_json_, *r2 = &model_json_;
    if (b2 < b1) std::swap(b1, b2), std::swap(e1, e2), std::swap(r1, r2);
    e += "data: ";
    e.append(d.substr(0, b1));
    e += *r1;
    e.append(d.substr(e1, b2 - e1));
    e += *r2;
    e.append(d.substr(e2));
    e += "\n\n";
    c.id = id_;
    c.model = model_;
    remember_shape(d, o, c);
    return true;
  }

  // The same-shape path. A provider's chunks differ from one another in the content of their
  // one choice's delta, and sometimes in members after the choices (OpenAI's "obfuscation"
  // padding): the id, created, model, fingerprint and the layout around the content stay the
  // same for the whole stream. So once an event was scanned, the next one whose bytes up to its
  // content string equal the last's, and whose bytes from the end of that string to the end of
  // the choices array equal the last's too, parses the same except for that string: only the
  // content (and, when the id and model came first, the members after the choices) is scanned,
  // and the relayed event is the last one's, with our id and model already in place, around
  // the new content. Two layouts qualify: the id and model before the choices (OpenAI's order;
  // what follows the choices may vary and is scanned) or after them (keys in sorted order;
  // everything after the content must then be byte-identical). Anything else (another layout,
  // a second choice, tool calls, usage) takes the full scan.
  struct Shape {
    bool valid = false;
    bool ids_first = false;   // the id and model lie before the content
    std::string head;         // the event's bytes up to and including the content's opening quote
    std::string mid;          // ids_first: from the content's closing quote to the end of the choices
    std::string suffix;       // !ids_first: from the content's closing quote to the end
    std::string relay_head;   // "data: " and head, with our id and model when they lie there
    std::string relay_suffix; // !ids_first: suffix with our id and model
    std::int64_t created = 0;
    int index = 0;
    std::string role, finish_reason;
  };
  void remember_shape(std::string_view d, const ChunkScan::Out& o, const ChatChunk& c) {
    shape_.valid = false;
    if (c.choices.size() != 1 || o.contents != 1 || o.content_open == std::string_view::npos || !o.has_choices) return;
    const ChunkChoice& ch = c.choices[0];
    if (!ch.tool_calls.empty() || !ch.content || c.usage) return;
    const bool first = o.id_e <= o.content_open && o.model_e <= o.content_open;
    const bool after = o.id_b >= o.choices_end && o.model_b >= o.choices_end;
    if (!first && !after) return;
    const std::size_t close = o.content_close;  // the content's closing quote
    const std::string& e = c.sse;            // "data: " + d with the id and model replaced + "\n\n"
    shape_.ids_first = first;
    shape_.head.assign(d.substr(0, o.content_open + 1));
    if (first) {
      shape_.mid.assign(d.substr(close, o.choices_end - close));
      shape_.relay_head.assign(e.data(), e.size() - 2 - (d.size() - o.content_open - 1));
    } else {
      shape_.suffix.assign(d.substr(close));
      shape_.relay_head.assign(e.data(), 6 + o.content_open + 1);  // d is e's until the choices end
      shape_.relay_suffix.assign(e.data() + 6 + close, e.size() - 2 - (6 + close));
    }
    shape_.created = c.created;
    shape_.index = ch.index;
    shape_.role = ch.role;
    shape_.finish_reason = ch.finish_reason;
    shape_.valid = true;
  }
  bool same_shape(std::string_view d, std::vector<ChatChunk>& out) {
    const Shape& sh = shape_;
    if (!sh.valid || d.size() <= sh.head.size() || std::memcmp(d.data(), sh.head.data(), sh.head.size()) != 0)
      return false;
    const std::string_view rest = d.substr(sh.head.size());
    if (!valid_utf8(rest)) return false;  // the head was checked with the event it came from
    ChatChunk& c = take(out);
    ChunkChoice& ch = c.choices.empty() ? c.choices.emplace_back() : c.choices.front();
    c.choices.resize(1);
    if (ch.content) ch.content->clear();
    else ch.content.emplace();
    ChunkScan sc(d, sh.head.size() - 1);
    if (!sc.string_at(&*ch.content)) return give_back(out), false;
    const std::size_t close = sc.pos() - 1;
    const std::string_view after = d.substr(close);
    if (sh.ids_first) {
      if (after.size() < sh.mid.size() || std::memcmp(after.data(), sh.mid.data(), sh.mid.size()) != 0)
        return give_back(out), false;
      ChunkScan tail(d, close + sh.mid.size());
      if (!tail.tail()) return give_back(out), false;
    } else if (after != sh.suffix) {
      return give_back(out), false;
    }
    c.created = sh.created;
    c.usage.reset();
    c.more = false;
    ch.index = sh.index;
    ch.role = sh.role;
    ch.tool_calls.clear();
    ch.finish_reason = sh.finish_reason;
    std::string& e = c.sse;
    e.clear();
    if (sh.ids_first) {
      e.reserve(sh.relay_head.size() + rest.size() + 2);
      e += sh.relay_head;
      e.append(rest);
    } else {
      e.reserve(sh.relay_head.size() + (close - sh.head.size()) + sh.relay_suffix.size() + 2);
      e += sh.relay_head;
      e.append(d.substr(sh.head.size(), close - sh.head.size()));
      e += sh.relay_suffix;
    }
    e += "\n\n";
    c.id = id_;
    c.model = model_;
    ++same_shape_count_;
    return true;
  }
  // A chunk the caller gave back (recycle) keeps its buffers: nothing is allocated.
  ChatChunk& take(std::vector<ChatChunk>& out) {
    if (spare_.empty()) {
      out.emplace_back();
    } else {
      out.push_back(std::move(spare_.back()));
      spare_.pop_back();
    }
    return out.back();
  }
  // The last chunk of `out` goes back to the spares.
  void give_back(std::vector<ChatChunk>& out) {
    if (spare_.size() < kSpares) spare_.push_back(std::move(out.back()));
    out.pop_back();
  }

  // The full decode: a DOM parse and the unified chunk (re-encoded by whoever relays it).
  Result<void> slow(const SseEvent& ev, std::vector<ChatChunk>& out) {
    if (ev.event == "error") {
      auto j = parse_json(ev.data);
      std::string msg = j && j->is_object() && j->contains("error") ? wire::jstr((*j)["error"], "message", ev.data) : ev.data;
      return fail(ErrorKind::stream_interrupted, msg);
    }
    auto j = parse_json(ev.data);
    if (!j) return fail(ErrorKind::malformed_response, "stream event is not valid JSON");
    // A JSON object with an `error` member in place of a chunk is fatal (OpenAI, OpenRouter...).
    if (j->is_object() && j->contains("error") && !j->contains("choices")) {
      const Json& err = (*j)["error"];
      std::string msg = err.is_object() ? wire::jstr(err, "message", "stream error") : err.is_string() ? err.get<std::string>() : "stream error";
      int status = err.is_object() ? static_cast<int>(wire::jint(err, "code", 0)) : 0;
      Error e = classify_http_error(status ? status : 500, {}, "stream error: " + msg);
      if (status == 0) e.kind = ErrorKind::stream_interrupted;
      return fail(std::move(e));
    }
    auto c = chat_chunk_from_json(*j);
    if (!c) return fail(c.error());
    for (const auto& ch : c->choices)
      if (ch.finish_reason == "error")  // OpenRouter: the upstream failed mid-stream
        return fail(ErrorKind::stream_interrupted, "provider reported finish_reason \"error\" mid-stream");
    if (!c->usage) {
      // Groq reports a stream's usage in x_groq.usage on its finish chunk, not in `usage`.
      const Json* xg = wire::jobj(*j, "x_groq");
      if (const Json* u = xg ? wire::jobj(*xg, "usage") : nullptr) {
        Usage g;
        g.prompt_tokens = wire::jint(*u, "prompt_tokens");
        g.completion_tokens = wire::jint(*u, "completion_tokens");
        c->usage = g;
      }
    }
    if (c->usage && c->usage->cached_tokens == 0) {
      if (const Json* u = wire::jobj(*j, "usage")) c->usage->cached_tokens = wire::jint(*u, "prompt_cache_hit_tokens");
    }
    if (relay_) c->id = id_, c->model = model_;
    out.push_back(std::move(*c));
    return {};
  }

  SseParser sse_;
  // Chunks given back (recycle) and reused by the next feed; a few are enough (the chunks of one
  // upstream read), the bound keeps a burst's from being held for the stream's life.
  static constexpr std::size_t kSpares = 16;
  std::vector<ChatChunk> spare_;
  Shape shape_;
  std::size_t same_shape_count_ = 0;
  bool done_ = false;
  bool relay_ = false;
  std::string id_, model_, id_json_, model_json_;
};

class OpenAICodec final : public Codec {
 public:
  std::string_view family() const noexcept override { return "openai"; }

  Result<HttpRequestSpec> encode_request(const ChatRequest& req, const ProviderEndpoint& ep,
                                         std::string_view upstream_model) const override {
    HttpRequestSpec spec;
    spec.url = join_url(ep.base_url, "/chat/completions");
    spec.headers.reserve(2);
    spec.headers.emplace_back("content-type", "application/json");
    if (!ep.api_key.empty()) spec.headers.emplace_back("authorization", "Bearer " + ep.api_key);
    auto provider_is = [&](std::string_view name, std::string_view host) {
      return ep.name == name || ep.base_url.find(host) != std::string::npos;
    };
    if (provider_is("perplexity", "api.perplexity.ai") && !req.tools.empty())
      return wire::unsupported_field(ep.name.empty() ? "perplexity" : ep.name, "tools", "Perplexity has no tool calling");
    const bool mistral = provider_is("mistral", "api.mistral.ai");
    // A plain request is written without a DOM, to the same bytes (openai_direct.cpp).
    if (!mistral)
      if (auto direct = wire::openai_body_direct(req, upstream_model)) {
        spec.body = std::move(*direct);
        return spec;
      }
    Json body = to_json(req);
    body["model"] = std::string(upstream_model);
    if (mistral) {
      // Mistral accepts only tool call ids matching [a-zA-Z0-9]{9}: rewrite others
      // deterministically so an assistant call and its tool result keep matching.
      auto fix = [](const std::string& id) {
        bool ok = id.size() == 9;
        for (char c : id) ok = ok && std::isalnum(static_cast<unsigned char>(c));
        if (ok) return id;
        static constexpr char kAlnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        std::uint64_t h = fnv1a64(id);
        std::string out;
        for (int i = 0; i < 9; ++i, h /= 62) out += kAlnum[h % 62];
        return out;
      };
      if (body.contains("messages"))
        for (auto& m : body["messages"]) {
          if (m.contains("tool_call_id") && m["tool_call_id"].is_string()) m["tool_call_id"] = fix(m["tool_call_id"].get<std::string>());
          if (m.contains("tool_calls") && m["tool_calls"].is_array())
            for (auto& tc : m["tool_calls"])
              if (tc.contains("id") && tc["id"].is_string()) tc["id"] = fix(tc["id"].get<std::string>());
        }
      if (body.contains("seed")) body["random_seed"] = body["seed"], body.erase("seed");
      // Mistral refuses fields it does not know (422 extra_forbidden): rename the one it has
      // under another name, leave out the hints that do not change the answer.
      if (body.contains("max_completion_tokens"))
        body["max_tokens"] = body["max_completion_tokens"], body.erase("max_completion_tokens");
      for (const char* hint : {"user", "store", "safety_identifier", "prompt_cache_retention"}) body.erase(hint);
    }
    // Always ask for usage on streams: cost accounting needs it even when the caller did not.
    // Mistral refuses stream_options (422 extra_forbidden) and reports usage on its last chunk.
    if (req.stream && !mistral) body["stream_options"] = {{"include_usage", true}};
    else if (mistral) body.erase("stream_options");
    spec.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
    return spec;
  }

  Result<ChatResponse> decode_response(std::string_view body) const override {
    auto j = parse_json(body);
    if (!j) return fail(ErrorKind::malformed_response, "provider response is not valid JSON");
    auto r = chat_response_from_json(*j);
    // DeepSeek reports cache hits as usage.prompt_cache_hit_tokens instead of cached_tokens.
    if (r && r->usage.cached_tokens == 0)
      if (const Json* u = wire::jobj(*j, "usage")) r->usage.cached_tokens = wire::jint(*u, "prompt_cache_hit_tokens");
    return r;
  }

  Error decode_error(int status, const Headers& headers, std::string_view body) const override {
    std::string message = "HTTP " + std::to_string(status);
    std::string code, type;
    auto j = parse_json(body);
    if (j && j->is_object()) {
      const Json* err = j->contains("error") ? &(*j)["error"] : nullptr;
      if (err && err->is_object()) {
        if (err->contains("message") && (*err)["message"].is_string()) message = (*err)["message"].get<std::string>();
        if (err->contains("code") && (*err)["code"].is_string()) code = (*err)["code"].get<std::string>();
        if (err->contains("type") && (*err)["type"].is_string()) type = (*err)["type"].get<std::string>();
      } else if (err && err->is_string()) {
        message = err->get<std::string>();
      } else if (!err && j->contains("message")) {
        // Mistral: no "error" envelope; `message` is a string, or for validation errors (422) an
        // object with pydantic's `detail` list; `type` and `code` sit beside it.
        const Json& m = (*j)["message"];
        message = m.is_string() ? m.get<std::string>() : m.dump(-1, ' ', false, Json::error_handler_t::replace);
        code = wire::jstr(*j, "code");
        type = wire::jstr(*j, "type");
      }
    } else if (!body.empty()) {
      message += ": " + std::string(body.substr(0, 200));
    }
    Error e = classify_http_error(status, headers, std::move(message));
    e.code = !code.empty() ? code : type;
    if (code == "insufficient_quota") e.kind = ErrorKind::quota_exceeded;
    else if (code == "context_length_exceeded") e.kind = ErrorKind::context_length;
    else if (code == "content_filter" || code == "content_policy_violation") e.kind = ErrorKind::content_filter;
    if (const auto* sr = find_header(headers, "x-should-retry"); sr && *sr == "false" &&
        (e.kind == ErrorKind::rate_limited || e.kind == ErrorKind::server_error))
      e.kind = ErrorKind::quota_exceeded;
    return e;
  }

  std::unique_ptr<StreamDecoder> stream_decoder() const override { return std::make_unique<OpenAIStreamDecoder>(); }
};

}  // namespace

const Codec& openai_codec() {
  static const OpenAICodec c;
  return c;
}

std::unique_ptr<StreamDecoder> openai_relay_decoder(std::string_view chunk_id, std::string_view model) {
  return std::make_unique<OpenAIStreamDecoder>(chunk_id, model);
}

std::size_t openai_relay_same_shape_count(const StreamDecoder& decoder) noexcept {
  const auto* d = dynamic_cast<const OpenAIStreamDecoder*>(&decoder);
  return d ? d->same_shape_count() : 0;
}

std::optional<ChatResponse> openai_relay_response(std::string&& body) {
  if (!valid_utf8(body)) return std::nullopt;  // relayed bytes must be valid; the encoder replaces
  ChunkScan::ResponseOut o;
  if (!ChunkScan(body).run_response(o)) return std::nullopt;
  ChatResponse r = std::move(o.resp);
  r.relayed.id_begin = o.id_b;
  r.relayed.id_end = o.id_e;
  r.relayed.model_begin = o.model_b;
  r.relayed.model_end = o.model_e;
  r.relayed.json = std::move(body);
  return r;
}

std::string RelayedBody::with(std::string_view id, std::string_view model) const {
  if (json.empty()) return {};
  const std::string qid = json_quoted(id), qmodel = json_quoted(model);
  std::size_t b1 = id_begin, e1 = id_end, b2 = model_begin, e2 = model_end;
  const std::string *r1 = &qid, *r2 = &qmodel;
  if (b2 < b1) std::swap(b1, b2), std::swap(e1, e2), std::swap(r1, r2);
  const std::string_view d = json;
  std::string out;
  out.reserve(d.size() + qid.size() + qmodel.size());
  out.append(d.substr(0, b1));
  out += *r1;
  out.append(d.substr(e1, b2 - e1));
  out += *r2;
  out.append(d.substr(e2));
  return out;
}

}  // namespace modelux
