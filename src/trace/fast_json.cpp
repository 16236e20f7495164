// Direct JSON serialization of a DecisionTrace for the store's writer thread.
//
// Building an nlohmann::json tree and dumping it costs tens of microseconds per trace (one
// allocation per node and per key); appending to one reserved string is several times faster
// and is what bounds the store's sustained throughput. The output parses to exactly what
// DecisionTrace::to_json() produces (tested), so readers never know which wrote it.
#include <charconv>
#include <cmath>

#include "modelux/decision.hpp"
#include "trace/trace_json_util.hpp"

namespace modelux::trace_detail {

namespace {

void put_string(std::string& o, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  o += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    // Plain printable ASCII (nearly all of a trace) is copied a run at a time.
    std::size_t j = i;
    while (j < n && p[j] >= 0x20 && p[j] < 0x80 && p[j] != '"' && p[j] != '\\') ++j;
    if (j > i) {
      o.append(s.data() + i, j - i);
      i = j;
      if (i == n) break;
    }
    unsigned char c = p[i];
    if (c < 0x80) {
      switch (c) {
        case '"': o += "\\\""; break;
        case '\\': o += "\\\\"; break;
        case '\n': o += "\\n"; break;
        case '\r': o += "\\r"; break;
        case '\t': o += "\\t"; break;
        case '\b': o += "\\b"; break;
        case '\f': o += "\\f"; break;
        default:
          if (c < 0x20) {
            o += "\\u00";
            o += kHex[c >> 4];
            o += kHex[c & 15];
          } else {
            o += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    // Validate one UTF-8 sequence (no overlongs, no surrogates, <= U+10FFFF).
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    bool ok = len != 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))))
      ok = false;
    if (ok) {
      o.append(s.data() + i, len);
      i += len;
    } else {
      o += "\xEF\xBF\xBD";  // U+FFFD, one per bad byte
      ++i;
    }
  }
  o += '"';
}

void put_key(std::string& o, const char* k) {
  o += '"';
  o += k;
  o += "\":";
}

template <class Int>
void put_int(std::string& o, Int v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  o.append(buf, r.ptr);
}

void put_double(std::string& o, double v) {
  if (!std::isfinite(v)) {
    o += "null";
    return;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string_view sv(buf, static_cast<std::size_t>(r.ptr - buf));
  o += sv;
  // Keep it a JSON float ("3" -> "3.0") so it reads back as a number either way.
  if (sv.find_first_of(".eEn") == std::string_view::npos) o += ".0";
}

void put_ms(std::string& o, Nanos n) { put_double(o, static_cast<double>(n.count()) / 1e6); }

struct Obj {
  std::string& o;
  bool first = true;
  explicit Obj(std::string& out) : o(out) { o += '{'; }
  ~Obj() { o += '}'; }
  std::string& key(const char* k) {
    if (!first) o += ',';
    first = false;
    put_key(o, k);
    return o;
  }
  void str(const char* k, std::string_view v) { put_string(key(k), v); }
  void num(const char* k, double v) { put_double(key(k), v); }
  void ms(const char* k, Nanos v) { put_ms(key(k), v); }
  template <class Int>
  void integer(const char* k, Int v) {
    put_int(key(k), v);
  }
  void boolean(const char* k, bool v) { key(k) += v ? "true" : "false"; }
};

void put_usage(std::string& o, const Usage& u) {
  Obj j(o);
  j.integer("prompt_tokens", u.prompt_tokens);
  j.integer("completion_tokens", u.completion_tokens);
  j.integer("cached_tokens", u.cached_tokens);
  j.integer("cache_write_tokens", u.cache_write_tokens);
  j.integer("reasoning_tokens", u.reasoning_tokens);
}

void put_cost(std::string& o, const Cost& c) {
  Obj j(o);
  j.num("input_usd", c.input_usd);
  j.num("output_usd", c.output_usd);
  j.num("total_usd", c.total());
}

}  // namespace

void append_trace_json(std::string& o, const DecisionTrace& t) {
  Obj j(o);
  j.str("request_id", t.request_id);
  j.str("time", format_iso_time(t.time));
  j.str("config", t.config);
  j.integer("config_version", t.config_version);
  j.str("strategy", t.strategy);
  j.str("project", t.project);
  j.str("org", t.org);
  j.str("end_user", t.end_user);
  j.str("api_key_id", t.api_key_id);
  // Same rule as to_json(): an object, or [[k, v], ...] when a key repeats.
  bool repeated = false;
  for (std::size_t a = 0; a < t.tags.size() && !repeated; ++a)
    for (std::size_t b = a + 1; b < t.tags.size(); ++b)
      if (t.tags[a].first == t.tags[b].first) {
        repeated = true;
        break;
      }
  std::string& tg = j.key("tags");
  tg += repeated ? '[' : '{';
  for (std::size_t i = 0; i < t.tags.size(); ++i) {
    if (i) tg += ',';
    if (repeated) {
      tg += '[';
      put_string(tg, t.tags[i].first);
      tg += ',';
      put_string(tg, t.tags[i].second);
      tg += ']';
    } else {
      put_string(tg, t.tags[i].first);
      tg += ':';
      put_string(tg, t.tags[i].second);
    }
  }
  tg += repeated ? ']' : '}';
  j.boolean("stream", t.stream);
  j.integer("est_input_tokens", t.est_input_tokens);
  j.integer("max_tokens", t.max_tokens);
  std::string& at = j.key("attempts");
  at += '[';
  for (std::size_t i = 0; i < t.attempts.size(); ++i) {
    const AttemptRecord& a = t.attempts[i];
    if (i) at += ',';
    Obj aj(at);
    aj.integer("id", a.id);
    aj.str("model", a.model);
    aj.str("provider", a.provider);
    aj.ms("start_offset_ms", a.start_offset);
    aj.ms("duration_ms", a.duration);
    aj.ms("ttft_ms", a.ttft);
    aj.boolean("ok", a.ok);
    aj.str("outcome", a.outcome);
    aj.integer("status", a.status);
    aj.str("error", a.error);
    put_usage(aj.key("usage"), a.usage);
    put_cost(aj.key("cost"), a.cost);
    aj.str("why_tried", a.why_tried);
    aj.str("why_ended", a.why_ended);
    if (a.member >= 0) {
      aj.integer("member", a.member);
      aj.str("vote", a.vote);
    }
  }
  at += ']';
  j.boolean("ok", t.ok);
  j.str("served_model", t.served_model);
  j.str("served_provider", t.served_provider);
  j.str("error_kind", t.error_kind);
  j.str("error_message", t.error_message);
  j.str("decision", t.decision);
  j.str("reason", t.reason);
  j.ms("total_ms", t.total);
  j.ms("ttft_ms", t.ttft);
  put_usage(j.key("usage"), t.usage);
  put_cost(j.key("cost"), t.cost);
  std::string& ba = j.key("budget_actions");
  ba += '[';
  for (std::size_t i = 0; i < t.budget_actions.size(); ++i) {
    if (i) ba += ',';
    put_string(ba, t.budget_actions[i]);
  }
  ba += ']';
  j.str("ab_arm", t.ab_arm);
  j.str("aggregation", t.aggregation);
  if (!t.request_body.empty()) j.str("request_body", t.request_body);
  if (!t.response_body.empty()) j.str("response_body", t.response_body);
}

}  // namespace modelux::trace_detail
