// The plain OpenAI request without a JSON DOM (issue 13): reading the caller's body straight
// into a ChatRequest, and writing the upstream body for an OpenAI-format provider straight from
// it. Together they were a third of the user-space instructions of a proxied request, most of
// it nlohmann's DOM (about 60 allocations per request).
//
// Both handle only the common shape (model, messages with string content, the sampling
// scalars, stop, stream, stream_options, user) and answer nullopt for anything else, which then
// takes the DOM path. What they produce is exactly what the DOM path gives for the same input:
// the reader gives the same ChatRequest as chat_request_from_json(parse_json(body)), the writer
// the same bytes as nlohmann's dump of to_json() (keys in nlohmann's sorted order, its string
// escapes, its number format); tests/unit-wire-openai-direct.cpp checks both against the DOM
// path. Errors are never produced here: an invalid body answers nullopt and the DOM path
// words the error. Stateless; any thread.
#include <algorithm>
#include <charconv>
#include <cmath>

#include "modelux/core.hpp"
#include "wire/codecs.hpp"

namespace modelux::wire {

namespace {

// ---- writing -----------------------------------------------------------------------------

// nlohmann's escapes with ensure_ascii off: '"', '\\', the five short control escapes, other
// control bytes as \u00xx (lowercase hex), everything else as is. False for invalid UTF-8
// (nlohmann's replace handler rewrites it: the DOM path decides).
bool put_string(std::string& o, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  o += '"';
  std::size_t b = 0;
  bool ascii = true;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') {
      ascii = ascii && c < 0x80;
      continue;
    }
    o.append(s.data() + b, i - b);
    b = i + 1;
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\b': o += "\\b"; break;
      case '\f': o += "\\f"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        o += "\\u00";
        o += kHex[c >> 4];
        o += kHex[c & 15];
    }
  }
  o.append(s.data() + b, s.size() - b);
  o += '"';
  return ascii || valid_utf8(s);
}

void put_int(std::string& o, std::int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  o.append(buf, r.ptr);
}

// nlohmann's own number format (its grisu2 output differs from std::to_chars in places): the
// function its serializer's dump_float calls, without constructing a serializer per number.
void put_double(std::string& o, double v) {
  if (!std::isfinite(v)) {
    o += "null";
    return;
  }
  char buf[64];
  o.append(buf, nlohmann::detail::to_chars(buf, buf + sizeof buf, v));
}

}  // namespace

std::optional<std::string> openai_body_direct(const ChatRequest& r, std::string_view model) {
  if (!r.tools.empty() || !r.tool_choice.is_null() || !r.response_format.is_null() || !r.metadata.is_null() ||
      !r.extra.is_null())
    return std::nullopt;
  std::string o;
  std::size_t guess = 160 + model.size() + r.user.size();
  for (const auto& m : r.messages) guess += 40 + m.name.size() + m.tool_call_id.size() + (m.content.empty() ? 0 : m.content[0].text.size());
  o.reserve(guess);
  bool first = true;
  auto key = [&](std::string_view k) {
    o += first ? "{\"" : ",\"";
    first = false;
    o += k;
    o += "\":";
  };
  // Keys in nlohmann's (std::map) order.
  if (r.max_tokens) {
    key(r.max_tokens_is_completion ? "max_completion_tokens" : "max_tokens");
    put_int(o, *r.max_tokens);
  }
  key("messages");
  o += '[';
  for (std::size_t i = 0; i < r.messages.size(); ++i) {
    const Message& m = r.messages[i];
    if (!m.tool_calls.empty() || m.refusal) return std::nullopt;
    o += i ? ",{\"content\":" : "{\"content\":";
    if (m.content_null && m.content.empty()) {
      o += "null";
    } else if (!m.content_is_string) {
      return std::nullopt;
    } else if (m.content.size() == 1 && m.content[0].type == ContentPart::Type::text) {
      if (!put_string(o, m.content[0].text)) return std::nullopt;
    } else {
      if (!put_string(o, m.text())) return std::nullopt;
    }
    if (!m.name.empty()) {
      o += ",\"name\":";
      if (!put_string(o, m.name)) return std::nullopt;
    }
    o += ",\"role\":";
    if (!put_string(o, m.role)) return std::nullopt;
    if (!m.tool_call_id.empty()) {
      o += ",\"tool_call_id\":";
      if (!put_string(o, m.tool_call_id)) return std::nullopt;
    }
    o += '}';
  }
  o += ']';
  key("model");
  if (!put_string(o, model)) return std::nullopt;
  if (r.n) key("n"), put_int(o, *r.n);
  if (r.parallel_tool_calls) key("parallel_tool_calls"), o += *r.parallel_tool_calls ? "true" : "false";
  if (r.seed) key("seed"), put_int(o, *r.seed);
  if (!r.stop.empty()) {
    key("stop");
    o += '[';
    for (std::size_t i = 0; i < r.stop.size(); ++i) {
      if (i) o += ',';
      if (!put_string(o, r.stop[i])) return std::nullopt;
    }
    o += ']';
  }
  // The encoder always asks for usage on a stream (cost accounting needs it).
  if (r.stream) key("stream"), o += "true,\"stream_options\":{\"include_usage\":true}";
  if (r.temperature) key("temperature"), put_double(o, *r.temperature);
  if (r.top_p) key("top_p"), put_double(o, *r.top_p);
  if (!r.user.empty()) {
    key("user");
    if (!put_string(o, r.user)) return std::nullopt;
  }
  o += '}';
  return o;
}

// ---- reading -----------------------------------------------------------------------------

namespace {

class PlainRequestReader {
 public:
  explicit PlainRequestReader(std::string_view s) : s_(s) {}

  bool run(ChatRequest& r) {
    ws();
    if (!eat('{')) return false;
    ws();
    if (eat('}')) return false;  // no model: the DOM path words the error
    unsigned seen = 0;
    for (;;) {
      std::string_view k;
      if (!key(k)) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      const unsigned bit = key_bit(k);
      if (!bit || (seen & bit)) return false;  // an unknown or repeated key: the DOM path
      seen |= bit;
      if (!value(k, r)) return false;
      ws();
      if (eat(',')) {
        ws();
        continue;
      }
      if (!eat('}')) return false;
      break;
    }
    ws();
    // Both max_tokens spellings: the DOM path's (sorted) order decides which wins.
    if ((seen & kMaxTok) && (seen & kMaxComp)) return false;
    return i_ == s_.size() && !r.model.empty() && !r.messages.empty();
  }

 private:
  enum : unsigned {
    kModel = 1, kMessages = 2, kTemp = 4, kTopP = 8, kMaxTok = 16, kMaxComp = 32, kN = 64, kSeed = 128,
    kStop = 256, kStream = 512, kStreamOpt = 1024, kUser = 2048,
  };
  static unsigned key_bit(std::string_view k) {
    if (k == "model") return kModel;
    if (k == "messages") return kMessages;
    if (k == "temperature") return kTemp;
    if (k == "top_p") return kTopP;
    if (k == "max_tokens") return kMaxTok;
    if (k == "max_completion_tokens") return kMaxComp;
    if (k == "n") return kN;
    if (k == "seed") return kSeed;
    if (k == "stop") return kStop;
    if (k == "stream") return kStream;
    if (k == "stream_options") return kStreamOpt;
    if (k == "user") return kUser;
    return 0;
  }

  bool value(std::string_view k, ChatRequest& r) {
    if (k == "model") return string(&r.model) && !r.model.empty();
    if (k == "messages") return messages(r.messages);
    if (k == "user") return peek() == 'n' ? null() : string(&r.user);
    if (k == "stream") return peek() == 'n' ? null() : boolean(r.stream);
    if (k == "temperature" || k == "top_p") {
      if (peek() == 'n') return null();
      double d = 0;
      if (!number(d)) return false;
      (k == "temperature" ? r.temperature : r.top_p) = d;
      return true;
    }
    if (k == "max_tokens" || k == "max_completion_tokens" || k == "n" || k == "seed") {
      if (peek() == 'n') return null();
      std::int64_t v = 0;
      if (!integer(v)) return false;
      if (k == "n") r.n = v;
      else if (k == "seed") r.seed = v;
      else {
        if (v < 1) return false;
        r.max_tokens = v;
        r.max_tokens_is_completion = k == "max_completion_tokens";
      }
      return true;
    }
    if (k == "stop") {
      if (peek() == 'n') return null();
      if (peek() == '"') return string(&r.stop.emplace_back());
      return array([&] { return string(&r.stop.emplace_back()); });
    }
    if (k == "stream_options") {
      if (peek() == 'n') return null();
      // Only {} or {"include_usage": bool|null}.
      if (!eat('{')) return false;
      ws();
      if (eat('}')) return true;
      std::string_view ik;
      if (!key(ik) || ik != "include_usage") return false;
      ws();
      if (!eat(':')) return false;
      ws();
      if (peek() == 'n' ? !null() : !boolean(r.include_usage)) return false;
      ws();
      return eat('}');
    }
    return false;
  }

  bool messages(std::vector<Message>& out) {
    out.reserve(4);
    if (!array([&] { return message(out.emplace_back()); })) return false;
    return !out.empty();
  }

  // {"role": ..., "content": string|null, "name": string|null, "tool_call_id": string|null}
  bool message(Message& m) {
    if (!eat('{')) return false;
    ws();
    if (eat('}')) return false;
    unsigned seen = 0;
    bool content_set = false, tool_call_id_set = false;
    for (;;) {
      std::string_view k;
      if (!key(k)) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      unsigned bit = k == "role" ? 1u : k == "content" ? 2u : k == "name" ? 4u : k == "tool_call_id" ? 8u : 0u;
      if (!bit || (seen & bit)) return false;
      seen |= bit;
      if (bit == 1) {
        if (!string(&m.role)) return false;
      } else if (bit == 2) {
        if (peek() == 'n') {
          if (!null()) return false;
        } else {
          if (!string(&m.content.emplace_back().text)) return false;
          content_set = true;
        }
      } else {
        std::string& dst = bit == 4 ? m.name : m.tool_call_id;
        if (peek() == 'n') {
          if (!null()) return false;
        } else {
          if (!string(&dst)) return false;
          if (bit == 8) tool_call_id_set = true;
        }
      }
      ws();
      if (eat(',')) {
        ws();
        continue;
      }
      if (!eat('}')) return false;
      break;
    }
    static constexpr std::string_view kRoles[] = {"system", "developer", "user", "assistant", "tool", "function"};
    if (std::find(std::begin(kRoles), std::end(kRoles), m.role) == std::end(kRoles)) return false;
    m.content_null = !content_set;
    // Errors the DOM path reports: a tool message without tool_call_id, a missing content.
    if (m.role == "tool" && !tool_call_id_set) return false;
    if (m.content_null && m.role != "assistant") return false;
    return true;
  }

  template <class F>
  bool array(F&& element) {
    if (!eat('[')) return false;
    ws();
    if (eat(']')) return true;
    for (;;) {
      if (!element()) return false;
      ws();
      if (eat(',')) {
        ws();
        continue;
      }
      return eat(']');
    }
  }

  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
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
  bool boolean(bool& b) {
    if (lit("true")) return b = true, true;
    if (lit("false")) return b = false, true;
    return false;
  }
  // A key without escapes or non-ASCII bytes (every key read here is plain ASCII).
  bool key(std::string_view& k) {
    if (!eat('"')) return false;
    std::size_t b = i_;
    while (i_ < s_.size() && s_[i_] != '"') {
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '\\' || c < 0x20 || c >= 0x80) return false;
      ++i_;
    }
    if (i_ >= s_.size()) return false;
    k = s_.substr(b, i_ - b);
    ++i_;
    return true;
  }
  // A JSON string, decoded into *out. Escapes other than the simple ones (\uXXXX) and invalid
  // UTF-8 take the DOM path.
  bool string(std::string* out) {
    if (!eat('"')) return false;
    bool ascii = true;
    for (;;) {
      std::size_t b = i_;
      while (i_ < s_.size()) {
        const auto c = static_cast<unsigned char>(s_[i_]);
        if (c == '"' || c == '\\' || c < 0x20) break;
        ascii = ascii && c < 0x80;
        ++i_;
      }
      if (!ascii && !valid_utf8(s_.substr(b, i_ - b))) return false;
      ascii = true;
      out->append(s_.data() + b, i_ - b);
      if (i_ >= s_.size() || static_cast<unsigned char>(s_[i_]) < 0x20) return false;
      if (s_[i_] == '"') {
        ++i_;
        return true;
      }
      ++i_;  // backslash
      char e = peek();
      ++i_;
      switch (e) {
        case '"': *out += '"'; break;
        case '\\': *out += '\\'; break;
        case '/': *out += '/'; break;
        case 'b': *out += '\b'; break;
        case 'f': *out += '\f'; break;
        case 'n': *out += '\n'; break;
        case 'r': *out += '\r'; break;
        case 't': *out += '\t'; break;
        default: return false;
      }
    }
  }
  // The JSON number grammar, checked, then converted: `integral` says it had no fraction or
  // exponent.
  bool number_span(std::string_view& num, bool& integral) {
    std::size_t b = i_;
    eat('-');
    if (peek() == '0') ++i_;
    else if (peek() >= '1' && peek() <= '9')
      while (peek() >= '0' && peek() <= '9') ++i_;
    else return false;
    integral = true;
    if (eat('.')) {
      integral = false;
      if (!(peek() >= '0' && peek() <= '9')) return false;
      while (peek() >= '0' && peek() <= '9') ++i_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      if (!(peek() >= '0' && peek() <= '9')) return false;
      while (peek() >= '0' && peek() <= '9') ++i_;
    }
    num = s_.substr(b, i_ - b);
    return true;
  }
  bool integer(std::int64_t& v) {
    std::string_view n;
    bool integral = false;
    if (!number_span(n, integral) || !integral) return false;
    auto r = std::from_chars(n.data(), n.data() + n.size(), v);
    return r.ec == std::errc{} && r.ptr == n.data() + n.size();  // out of int64: the DOM path
  }
  bool number(double& d) {
    std::string_view n;
    bool integral = false;
    if (!number_span(n, integral)) return false;
    if (integral) {
      // nlohmann keeps an integer as one and converts it to double on get<double>().
      std::int64_t v = 0;
      auto r = std::from_chars(n.data(), n.data() + n.size(), v);
      if (r.ec != std::errc{} || r.ptr != n.data() + n.size()) return false;
      d = static_cast<double>(v);
      return true;
    }
    auto r = std::from_chars(n.data(), n.data() + n.size(), d);
    return r.ec == std::errc{} && r.ptr == n.data() + n.size() && std::isfinite(d);
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

}  // namespace

std::optional<ChatRequest> read_plain_chat_request(std::string_view body, const ParseLimits& limits) {
  // Over the size limit, or a depth limit below the 3 levels read here: the DOM path's error.
  if (body.size() > limits.max_bytes || limits.max_depth < 3) return std::nullopt;
  ChatRequest r;
  PlainRequestReader reader(body);
  if (!reader.run(r)) return std::nullopt;
  return r;
}

}  // namespace modelux::wire
