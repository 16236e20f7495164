// Direct JSON serialization of a DecisionTrace for the store's writer thread.
//
// Building an nlohmann::json tree and dumping it costs tens of microseconds per trace (one
// allocation per node and per key); appending to one reserved string is several times faster
// and is what bounds the store's sustained throughput. The output is to_json() without the
// fields that hold their default value (empty, zero, false) and without the derived total_usd:
// DecisionTrace::from_json() reads it back to the same trace (tested), so readers never know
// which wrote it.
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
  // The stored body leaves out what from_json() would default anyway (an empty string, a zero,
  // false): a quarter of a typical trace's bytes, which the writer would otherwise serialise,
  // copy into pages and write twice (WAL, then checkpoint). DecisionTrace::from_json() reads
  // the body back to the same trace, and to_json() (the API's form) still has every field.
  void opt_str(const char* k, std::string_view v) {
    if (!v.empty()) str(k, v);
  }
  void opt_ms(const char* k, Nanos v) {
    if (v.count() != 0) ms(k, v);
  }
  template <class Int>
  void opt_integer(const char* k, Int v) {
    if (v != 0) integer(k, v);
  }
  void opt_true(const char* k, bool v) {
    if (v) boolean(k, v);
  }
};

// 0.0 exactly (not -0.0, which keeps its sign in the JSON).
bool is_zero(double v) { return v == 0 && !std::signbit(v); }

// Usage and cost objects are left out whole when empty; total_usd is derived, so never stored.
void put_usage(Obj& parent, const Usage& u) {
  if (u.prompt_tokens == 0 && u.completion_tokens == 0 && u.cached_tokens == 0 && u.cache_write_tokens == 0 &&
      u.reasoning_tokens == 0)
    return;
  Obj j(parent.key("usage"));
  j.opt_integer("prompt_tokens", u.prompt_tokens);
  j.opt_integer("completion_tokens", u.completion_tokens);
  j.opt_integer("cached_tokens", u.cached_tokens);
  j.opt_integer("cache_write_tokens", u.cache_write_tokens);
  j.opt_integer("reasoning_tokens", u.reasoning_tokens);
}

void put_cost(Obj& parent, const Cost& c) {
  const bool in = !is_zero(c.input_usd), out = !is_zero(c.output_usd);
  if (!in && !out) return;
  Obj j(parent.key("cost"));
  if (in) j.num("input_usd", c.input_usd);
  if (out) j.num("output_usd", c.output_usd);
}

}  // namespace

void append_trace_json(std::string& o, const DecisionTrace& t) {
  Obj j(o);
  j.str("request_id", t.request_id);
  j.str("time", format_iso_time(t.time));
  j.opt_str("config", t.config);
  j.opt_integer("config_version", t.config_version);
  j.opt_str("strategy", t.strategy);
  j.opt_str("project", t.project);
  j.opt_str("org", t.org);
  j.opt_str("end_user", t.end_user);
  j.opt_str("api_key_id", t.api_key_id);
  // Same rule as to_json(): an object, or [[k, v], ...] when a key repeats.
  bool repeated = false;
  for (std::size_t a = 0; a < t.tags.size() && !repeated; ++a)
    for (std::size_t b = a + 1; b < t.tags.size(); ++b)
      if (t.tags[a].first == t.tags[b].first) {
        repeated = true;
        break;
      }
  std::string& tg = t.tags.empty() ? o : j.key("tags");
  if (!t.tags.empty()) tg += repeated ? '[' : '{';
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
  if (!t.tags.empty()) tg += repeated ? ']' : '}';
  j.opt_true("stream", t.stream);
  j.opt_integer("est_input_tokens", t.est_input_tokens);
  j.opt_integer("max_tokens", t.max_tokens);
  std::string& at = t.attempts.empty() ? o : j.key("attempts");
  if (!t.attempts.empty()) at += '[';
  for (std::size_t i = 0; i < t.attempts.size(); ++i) {
    const AttemptRecord& a = t.attempts[i];
    if (i) at += ',';
    Obj aj(at);
    aj.opt_integer("id", a.id);
    aj.opt_str("model", a.model);
    aj.opt_str("provider", a.provider);
    aj.opt_ms("start_offset_ms", a.start_offset);
    aj.opt_ms("duration_ms", a.duration);
    aj.opt_ms("ttft_ms", a.ttft);
    aj.opt_true("ok", a.ok);
    aj.opt_str("outcome", a.outcome);
    aj.opt_integer("status", a.status);
    aj.opt_str("error", a.error);
    put_usage(aj, a.usage);
    put_cost(aj, a.cost);
    aj.opt_str("why_tried", a.why_tried);
    aj.opt_str("why_ended", a.why_ended);
    if (a.member >= 0) {
      aj.integer("member", a.member);
      aj.str("vote", a.vote);
    }
  }
  if (!t.attempts.empty()) at += ']';
  j.opt_true("ok", t.ok);
  j.opt_str("served_model", t.served_model);
  j.opt_str("served_provider", t.served_provider);
  j.opt_str("error_kind", t.error_kind);
  j.opt_str("error_message", t.error_message);
  j.opt_str("decision", t.decision);
  j.opt_str("reason", t.reason);
  j.opt_ms("total_ms", t.total);
  j.opt_ms("ttft_ms", t.ttft);
  put_usage(j, t.usage);
  put_cost(j, t.cost);
  std::string& ba = t.budget_actions.empty() ? o : j.key("budget_actions");
  if (!t.budget_actions.empty()) ba += '[';
  for (std::size_t i = 0; i < t.budget_actions.size(); ++i) {
    if (i) ba += ',';
    put_string(ba, t.budget_actions[i]);
  }
  if (!t.budget_actions.empty()) ba += ']';
  j.opt_str("ab_arm", t.ab_arm);
  j.opt_str("aggregation", t.aggregation);
  if (!t.request_body.empty()) j.str("request_body", t.request_body);
  if (!t.response_body.empty()) j.str("response_body", t.response_body);
}

}  // namespace modelux::trace_detail
