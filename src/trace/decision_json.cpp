// DecisionTrace <-> JSON: the shape traces are exported (JSONL), stored (the `body` column of
// the trace store) and returned by the admin API.
//
// Durations are milliseconds as doubles ("duration_ms": 12.345) so people can read them;
// they round-trip to the nanosecond for any duration below ~100 days. Time is an ISO-8601
// UTC string with microseconds ("2026-01-01T00:00:00.123456Z"); from_json also accepts epoch
// milliseconds as a number. from_json never throws: stored traces may be malformed or hostile,
// and every fault is reported with its JSON path.
#include <cmath>
#include <cstdio>
#include <ctime>

#include "modelux/decision.hpp"
#include "trace/trace_json_util.hpp"

namespace modelux {

namespace trace_detail {

std::string format_iso_time(WallTime t) {
  using namespace std::chrono;
  auto us = duration_cast<microseconds>(t.time_since_epoch()).count();
  std::int64_t secs = us >= 0 ? us / 1'000'000 : (us - 999'999) / 1'000'000;
  std::int64_t frac = us - secs * 1'000'000;
  std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(frac));
  return buf;
}

std::optional<WallTime> parse_iso_time(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.ffffff]Z
  int Y, M, D, h, m, sec;
  if (s.size() < 20) return std::nullopt;
  std::string str(s);
  int consumed = 0;
  if (std::sscanf(str.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &Y, &M, &D, &h, &m, &sec, &consumed) != 6)
    return std::nullopt;
  if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return std::nullopt;
  std::size_t i = static_cast<std::size_t>(consumed);
  std::int64_t micros = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    int digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (digits < 6) {
        micros = micros * 10 + (s[i] - '0');
        ++digits;
      }
      ++i;
    }
    while (digits++ < 6) micros *= 10;
  }
  if (i >= s.size() || (s[i] != 'Z' && s[i] != 'z') || i + 1 != s.size()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = sec;
  std::int64_t secs = static_cast<std::int64_t>(timegm(&tm));
  return WallTime{std::chrono::duration_cast<WallTime::duration>(std::chrono::microseconds{secs * 1'000'000 + micros})};
}

}  // namespace trace_detail

std::string format_iso_time(WallTime t) { return trace_detail::format_iso_time(t); }

namespace {


double ms_of(Nanos n) { return static_cast<double>(n.count()) / 1e6; }

Json usage_json(const Usage& u) {
  return Json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"cached_tokens", u.cached_tokens},
              {"cache_write_tokens", u.cache_write_tokens},
              {"reasoning_tokens", u.reasoning_tokens}};
}

Json cost_json(const Cost& c) {
  return Json{{"input_usd", c.input_usd}, {"output_usd", c.output_usd}, {"total_usd", c.total()}};
}

// A small reader that walks one JSON object, remembers the first fault and its path, and
// never throws.
class Reader {
 public:
  Reader(const Json& j, std::string path, std::optional<Error>& err) : j_(j), path_(std::move(path)), err_(err) {
    if (!j_.is_object()) bad(path_, "must be an object");
  }

  void str(const char* key, std::string& out) {
    const Json* v = find(key);
    if (!v) return;
    if (!v->is_string()) return bad(sub(key), "must be a string");
    out = v->get_ref<const std::string&>();
  }
  template <class Int>
  void integer(const char* key, Int& out) {
    const Json* v = find(key);
    if (!v) return;
    if (!v->is_number_integer()) return bad(sub(key), "must be an integer");
    out = static_cast<Int>(v->get<std::int64_t>());
  }
  void number(const char* key, double& out) {
    const Json* v = find(key);
    if (!v) return;
    if (!v->is_number()) return bad(sub(key), "must be a number");
    out = v->get<double>();
    if (!std::isfinite(out)) return bad(sub(key), "must be finite");
  }
  void boolean(const char* key, bool& out) {
    const Json* v = find(key);
    if (!v) return;
    if (!v->is_boolean()) return bad(sub(key), "must be a boolean");
    out = v->get<bool>();
  }
  void millis(const char* key, Nanos& out) {
    double ms = 0;
    const Json* v = find(key);
    if (!v) return;
    number(key, ms);
    if (err_) return;
    if (ms < 0 || ms > 1e12) return bad(sub(key), "out of range");
    out = Nanos{static_cast<std::int64_t>(std::llround(ms * 1e6))};
  }
  void usage(const char* key, Usage& u) {
    const Json* v = find(key);
    if (!v) return;
    Reader r(*v, sub(key), err_);
    if (err_) return;
    r.integer("prompt_tokens", u.prompt_tokens);
    r.integer("completion_tokens", u.completion_tokens);
    r.integer("cached_tokens", u.cached_tokens);
    r.integer("cache_write_tokens", u.cache_write_tokens);
    r.integer("reasoning_tokens", u.reasoning_tokens);
  }
  void cost(const char* key, Cost& c) {
    const Json* v = find(key);
    if (!v) return;
    Reader r(*v, sub(key), err_);
    if (err_) return;
    r.number("input_usd", c.input_usd);
    r.number("output_usd", c.output_usd);
  }
  void strings(const char* key, std::vector<std::string>& out) {
    const Json* v = find(key);
    if (!v) return;
    if (!v->is_array()) return bad(sub(key), "must be an array of strings");
    for (std::size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string()) return bad(sub(key) + "[" + std::to_string(i) + "]", "must be a string");
      out.push_back((*v)[i].get<std::string>());
    }
  }
  const Json* find(const char* key) const {
    if (err_ || !j_.is_object()) return nullptr;
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  std::string sub(const char* key) const { return path_ + "." + key; }
  void bad(const std::string& path, const std::string& what) {
    if (err_) return;
    Error e;
    e.kind = ErrorKind::bad_request;
    e.message = "decision trace: " + path + " " + what;
    e.path = path;
    err_ = std::move(e);
  }

 private:
  const Json& j_;
  std::string path_;
  std::optional<Error>& err_;
};

}  // namespace

Json DecisionTrace::to_json() const {
  Json attempts_json = Json::array();
  for (const auto& a : attempts) {
    Json aj{{"id", a.id},
            {"model", a.model},
            {"provider", a.provider},
            {"start_offset_ms", ms_of(a.start_offset)},
            {"duration_ms", ms_of(a.duration)},
            {"ttft_ms", ms_of(a.ttft)},
            {"ok", a.ok},
            {"outcome", a.outcome},
            {"status", a.status},
            {"error", a.error},
            {"usage", usage_json(a.usage)},
            {"cost", cost_json(a.cost)},
            {"why_tried", a.why_tried},
            {"why_ended", a.why_ended}};
    if (a.member >= 0) {
      aj["member"] = a.member;
      aj["vote"] = a.vote;
    }
    attempts_json.push_back(std::move(aj));
  }
  // An object reads best; a trace with a repeated tag key keeps every pair as [[k, v], ...].
  Json tags_json = Json::object();
  for (const auto& [k, v] : tags) tags_json[k] = v;
  if (tags_json.size() != tags.size()) {
    tags_json = Json::array();
    for (const auto& [k, v] : tags) tags_json.push_back(Json::array({k, v}));
  }

  Json j{{"request_id", request_id},
         {"time", format_iso_time(time)},
         {"config", config},
         {"config_version", config_version},
         {"strategy", strategy},
         {"project", project},
         {"org", org},
         {"end_user", end_user},
         {"api_key_id", api_key_id},
         {"tags", std::move(tags_json)},
         {"stream", stream},
         {"est_input_tokens", est_input_tokens},
         {"max_tokens", max_tokens},
         {"attempts", std::move(attempts_json)},
         {"ok", ok},
         {"served_model", served_model},
         {"served_provider", served_provider},
         {"error_kind", error_kind},
         {"error_message", error_message},
         {"decision", decision},
         {"reason", reason},
         {"total_ms", ms_of(total)},
         {"ttft_ms", ms_of(ttft)},
         {"usage", usage_json(usage)},
         {"cost", cost_json(cost)},
         {"budget_actions", budget_actions},
         {"ab_arm", ab_arm},
         {"aggregation", aggregation}};
  if (!request_body.empty()) j["request_body"] = request_body;
  if (!response_body.empty()) j["response_body"] = response_body;
  return j;
}

Result<DecisionTrace> DecisionTrace::from_json(const Json& j) {
  std::optional<Error> err;
  DecisionTrace t;
  Reader r(j, "$", err);
  r.str("request_id", t.request_id);
  if (const Json* tv = r.find("time")) {
    if (tv->is_string()) {
      auto parsed = trace_detail::parse_iso_time(tv->get_ref<const std::string&>());
      if (!parsed) r.bad("$.time", "must be an ISO-8601 UTC time (2026-01-01T00:00:00.000Z)");
      else t.time = *parsed;
    } else if (tv->is_number_integer()) {
      t.time = WallTime{std::chrono::duration_cast<WallTime::duration>(Millis{tv->get<std::int64_t>()})};
    } else {
      r.bad("$.time", "must be an ISO-8601 string or epoch milliseconds");
    }
  }
  r.str("config", t.config);
  r.integer("config_version", t.config_version);
  r.str("strategy", t.strategy);
  r.str("project", t.project);
  r.str("org", t.org);
  r.str("end_user", t.end_user);
  r.str("api_key_id", t.api_key_id);
  if (const Json* tags = r.find("tags")) {
    if (tags->is_object()) {
      for (auto it = tags->begin(); it != tags->end(); ++it) {
        if (!it.value().is_string()) {
          r.bad("$.tags." + it.key(), "must be a string");
          break;
        }
        t.tags.emplace_back(it.key(), it.value().get<std::string>());
      }
    } else if (tags->is_array()) {  // [["k","v"], ...] keeps duplicate keys
      for (std::size_t i = 0; i < tags->size(); ++i) {
        const Json& p = (*tags)[i];
        if (!p.is_array() || p.size() != 2 || !p[0].is_string() || !p[1].is_string()) {
          r.bad("$.tags[" + std::to_string(i) + "]", "must be a [key, value] pair of strings");
          break;
        }
        t.tags.emplace_back(p[0].get<std::string>(), p[1].get<std::string>());
      }
    } else {
      r.bad("$.tags", "must be an object of strings");
    }
  }
  r.boolean("stream", t.stream);
  r.integer("est_input_tokens", t.est_input_tokens);
  r.integer("max_tokens", t.max_tokens);
  if (const Json* atts = r.find("attempts")) {
    if (!atts->is_array()) {
      r.bad("$.attempts", "must be an array");
    } else {
      for (std::size_t i = 0; i < atts->size() && !err; ++i) {
        AttemptRecord a;
        Reader ar((*atts)[i], "$.attempts[" + std::to_string(i) + "]", err);
        ar.integer("id", a.id);
        ar.str("model", a.model);
        ar.str("provider", a.provider);
        ar.millis("start_offset_ms", a.start_offset);
        ar.millis("duration_ms", a.duration);
        ar.millis("ttft_ms", a.ttft);
        ar.boolean("ok", a.ok);
        ar.str("outcome", a.outcome);
        ar.integer("status", a.status);
        ar.str("error", a.error);
        ar.usage("usage", a.usage);
        ar.cost("cost", a.cost);
        ar.str("why_tried", a.why_tried);
        ar.str("why_ended", a.why_ended);
        ar.integer("member", a.member);
        ar.str("vote", a.vote);
        t.attempts.push_back(std::move(a));
      }
    }
  }
  r.boolean("ok", t.ok);
  r.str("served_model", t.served_model);
  r.str("served_provider", t.served_provider);
  r.str("error_kind", t.error_kind);
  r.str("error_message", t.error_message);
  r.str("decision", t.decision);
  r.str("reason", t.reason);
  r.millis("total_ms", t.total);
  r.millis("ttft_ms", t.ttft);
  r.usage("usage", t.usage);
  r.cost("cost", t.cost);
  r.strings("budget_actions", t.budget_actions);
  r.str("ab_arm", t.ab_arm);
  r.str("aggregation", t.aggregation);
  r.str("request_body", t.request_body);
  r.str("response_body", t.response_body);
  if (err) return fail(std::move(*err));
  return t;
}

}  // namespace modelux
