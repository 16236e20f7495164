// modelux._core: the stores and tools around the router — the trace store (queries and
// analytics), the control store (versioned configs, diffs), the mock provider of the testing
// kit, and the Anthropic Messages conversions behind modelux.Anthropic.
//
// Threading: every store call does disk I/O and runs with the GIL released (the stores are
// thread-safe). MockProvider runs its own server threads; its methods are short.
#include <chrono>
#include <cmath>

#include <pybind11/stl.h>

#include "common.hpp"
#include "modelux/control.hpp"
#include "modelux/testing.hpp"
#include "modelux/trace.hpp"
#include "wire/anthropic_messages.hpp"

namespace modelux::python {

namespace {

WallTime wall_from_seconds(double s) {
  return WallTime{std::chrono::duration_cast<WallTime::duration>(std::chrono::duration<double>(s))};
}
double seconds_of(WallTime t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); }
double ms_of(Nanos n) { return std::chrono::duration<double, std::milli>(n).count(); }

/// {"since", "until" (unix seconds), "tags": {k: v}, "end_user", "project", "config", "model",
///  "provider", "ok", "limit", "newest_first"} → TraceQuery.
TraceQuery query_from_json(const Json& j) {
  TraceQuery q;
  if (!j.is_object()) throw PyError(fail(ErrorKind::bad_request, "trace query must be an object", "$").error());
  auto str = [&](const char* key, std::string& out) {
    if (auto it = j.find(key); it != j.end() && !it->is_null()) {
      if (!it->is_string())
        throw PyError(fail(ErrorKind::bad_request, std::string("'") + key + "' must be a string", std::string("$.") + key).error());
      out = it->get<std::string>();
    }
  };
  str("end_user", q.end_user);
  str("project", q.project);
  str("config", q.config);
  str("model", q.model);
  str("provider", q.provider);
  if (auto it = j.find("since"); it != j.end() && it->is_number()) q.since = wall_from_seconds(it->get<double>());
  if (auto it = j.find("until"); it != j.end() && it->is_number()) q.until = wall_from_seconds(it->get<double>());
  if (auto it = j.find("ok"); it != j.end() && it->is_boolean()) q.ok = it->get<bool>();
  if (auto it = j.find("limit"); it != j.end() && it->is_number_integer()) {
    if (it->get<std::int64_t>() < 0) throw PyError(fail(ErrorKind::bad_request, "limit must not be negative", "$.limit").error());
    q.limit = it->get<std::size_t>();
  }
  if (auto it = j.find("newest_first"); it != j.end() && it->is_boolean()) q.newest_first = it->get<bool>();
  if (auto it = j.find("tags"); it != j.end() && it->is_object())
    for (const auto& [k, v] : it->items()) {
      if (!v.is_string()) throw PyError(fail(ErrorKind::bad_request, "tag '" + k + "' must be a string", "$.tags." + k).error());
      q.tags.emplace_back(k, v.get<std::string>());
    }
  return q;
}

Json spend_row(const SpendRow& r) {
  return {{"key", r.key},          {"requests", r.requests},     {"input_tokens", r.input_tokens},
          {"output_tokens", r.output_tokens}, {"input_usd", r.input_usd}, {"output_usd", r.output_usd},
          {"total_usd", r.total_usd()}};
}

/// Runs `fn` with the GIL released and unwraps its Result.
template <class F>
auto nogil(F&& fn) {
  decltype(fn()) r = [&] {
    py::gil_scoped_release g;
    return fn();
  }();
  return unwrap(std::move(r));
}

void bind_trace_store(py::module_& m) {
  using py::arg;
  py::class_<TraceStore, std::shared_ptr<TraceStore>>(m, "TraceStore")
      .def(py::init([](const std::string& path, bool read_only) {
             auto mode = read_only ? TraceStore::Mode::read_only : TraceStore::Mode::read_write;
             return nogil([&] { return TraceStore::open(path, mode); });
           }),
           arg("path"), arg("read_only") = true)
      .def_property_readonly("path", &TraceStore::path)
      .def("query", [](TraceStore& s, const std::string& q) {
             TraceQuery tq = query_from_json(parse_text(q, "query"));
             auto traces = nogil([&] { return s.query(tq); });
             Json out = Json::array();
             for (const auto& t : traces) out.push_back(t.to_json());
             return out.dump();
           }, arg("query_json"))
      .def("count", [](TraceStore& s, const std::string& q) {
             TraceQuery tq = query_from_json(parse_text(q, "query"));
             return nogil([&] { return s.count(tq); });
           }, arg("query_json"))
      .def("get", [](TraceStore& s, const std::string& id) -> std::optional<std::string> {
             auto t = nogil([&] { return s.get(id); });
             if (!t) return std::nullopt;
             return t->to_json().dump();
           }, arg("request_id"))
      .def("configs", [](TraceStore& s) { return nogil([&] { return s.configs(); }); })
      .def("spend", [](TraceStore& s, const std::string& by, double since, double until) {
             auto dim = spend_dimension_from_string(by);
             if (!dim)
               throw PyError(fail(ErrorKind::bad_request, "by must be model, provider, project, tag or user", "$.by").error());
             auto r = nogil([&] { return s.spend(*dim, wall_from_seconds(since), wall_from_seconds(until)); });
             Json rows = Json::array();
             for (const auto& row : r.rows) rows.push_back(spend_row(row));
             return Json{{"by", std::string(to_string(r.by))}, {"since", seconds_of(r.since)}, {"until", seconds_of(r.until)},
                         {"rows", std::move(rows)}, {"total", spend_row(r.total)}}.dump();
           }, arg("by"), arg("since"), arg("until"))
      .def("latency", [](TraceStore& s, const std::string& by, double since, double until) {
             LatencyDimension dim;
             if (by == "model") dim = LatencyDimension::model;
             else if (by == "provider") dim = LatencyDimension::provider;
             else throw PyError(fail(ErrorKind::bad_request, "by must be model or provider", "$.by").error());
             auto rows = nogil([&] { return s.latency(dim, wall_from_seconds(since), wall_from_seconds(until)); });
             Json out = Json::array();
             for (const auto& r : rows)
               out.push_back({{"key", r.key}, {"count", r.count}, {"p50_ms", ms_of(r.p50)}, {"p95_ms", ms_of(r.p95)},
                              {"p99_ms", ms_of(r.p99)}, {"ttft_p50_ms", ms_of(r.ttft_p50)}});
             return out.dump();
           }, arg("by"), arg("since"), arg("until"))
      .def("errors", [](TraceStore& s, double since, double until) {
             auto groups = nogil([&] { return s.error_groups(wall_from_seconds(since), wall_from_seconds(until)); });
             Json out = Json::array();
             for (const auto& g : groups)
               out.push_back({{"error_class", g.error_class}, {"provider", g.provider}, {"model", g.model},
                              {"count", g.count}, {"first", seconds_of(g.first)}, {"last", seconds_of(g.last)},
                              {"sample_message", g.sample_message}});
             return out.dump();
           }, arg("since"), arg("until"))
      .def("failovers", [](TraceStore& s, double since, double until) {
             auto f = nogil([&] { return s.failovers(wall_from_seconds(since), wall_from_seconds(until)); });
             return Json{{"requests", f.requests}, {"failed_over", f.failed_over}, {"rescued", f.rescued},
                         {"failed", f.failed}, {"rate", f.rate()}}.dump();
           }, arg("since"), arg("until"))
      .def("forecast", [](TraceStore& s, int lookback_days) {
             auto f = nogil([&] { return s.forecast(std::chrono::system_clock::now(), lookback_days); });
             return Json{{"month_to_date_usd", f.month_to_date_usd}, {"daily_rate_usd", f.daily_rate_usd},
                         {"forecast_usd", f.forecast_usd}, {"days_elapsed", f.days_elapsed},
                         {"days_remaining", f.days_remaining}}.dump();
           }, arg("lookback_days") = 7);
}

/// The control store's config versions: what the proxy's /admin config endpoints read and
/// write, in-process (same SQLite file, same audit chain).
class PyControlStore {
 public:
  explicit PyControlStore(const std::string& path) {
    store_ = nogil([&] { return open_sqlite_control_store(path); });
  }
  std::string heads(const std::string& kind) {
    auto v = nogil([&] { return store_.configs->heads(kind); });
    Json out = Json::array();
    for (const auto& o : v) out.push_back(o.to_json(true));
    return out.dump();
  }
  std::optional<std::string> get(const std::string& kind, const std::string& name, std::int64_t version) {
    std::optional<ObjectVersion> v = version > 0 ? nogil([&] { return store_.configs->get(kind, name, version); })
                                                 : nogil([&] { return store_.configs->head(kind, name); });
    if (!v) return std::nullopt;
    return v->to_json(true).dump();
  }
  std::string history(const std::string& kind, const std::string& name, std::size_t limit) {
    auto v = nogil([&] { return store_.configs->history(kind, name, limit); });
    Json out = Json::array();
    for (const auto& o : v) out.push_back(o.to_json(false));
    return out.dump();
  }
  /// Appends a version (document null = delete). `expected`: the head version the writer read
  /// (0 = must not exist; None = no check); a different head raises with code version_conflict.
  std::string commit(const std::string& kind, const std::string& name, const std::string& document_json,
                     std::optional<std::int64_t> expected, const std::string& author, const std::string& message,
                     const std::string& action) {
    ObjectVersion v;
    v.kind = kind;
    v.name = name;
    v.author = author;
    v.message = message;
    v.action = action;
    v.at = std::chrono::system_clock::now();
    v.document = parse_text(document_json, "document");
    AuditEntry a;
    a.at = v.at;
    a.actor = author;
    a.from = "python";
    a.action = kind + "." + action;
    a.object = kind + ":" + name;
    a.detail = message;
    auto out = nogil([&] { return store_.configs->commit(std::move(v), expected, std::move(a)); });
    return out.to_json(true).dump();
  }
  std::string audit(const std::string& object, std::size_t limit) {
    AuditQuery q;
    q.object = object;
    q.limit = limit;
    auto v = nogil([&] { return store_.audit->query(q); });
    Json out = Json::array();
    for (const auto& e : v) out.push_back(e.to_json());
    return out.dump();
  }
  std::string verify_audit() { return nogil([&] { return store_.audit->verify(); }).to_json().dump(); }
  const std::string& path() const { return store_.path; }

 private:
  ControlStore store_;
};

class PyMockProvider {
 public:
  PyMockProvider(const std::string& config_json, std::uint64_t seed, int threads, int port) {
    mock::MockOptions o;
    o.seed = seed;
    o.threads = threads;
    o.port = port;
    o.config = parse_text(config_json, "mock config");
    mp_ = nogil([&] { return mock::MockProvider::start(std::move(o)); });
  }
  int port() const { return live().port(); }
  std::string base_url() const { return live().base_url(); }
  void configure(const std::string& doc) {
    Json j = parse_text(doc, "mock config");
    nogil([&] { return live().configure(j); });
  }
  std::string stats() const { return live().stats().dump(); }
  void stop() {
    if (!mp_) return;
    std::unique_ptr<mock::MockProvider> m = std::move(mp_);
    py::gil_scoped_release g;
    m->stop();
    m.reset();
  }

 private:
  mock::MockProvider& live() const {
    if (!mp_) throw py::value_error("this MockProvider is stopped");
    return *mp_;
  }
  std::unique_ptr<mock::MockProvider> mp_;
};

}  // namespace

void bind_store(py::module_& m) {
  using py::arg;
  bind_trace_store(m);

  py::class_<PyControlStore>(m, "ControlStore")
      .def(py::init<const std::string&>(), arg("path"))
      .def_property_readonly("path", &PyControlStore::path)
      .def("heads", &PyControlStore::heads, arg("kind"))
      .def("get", &PyControlStore::get, arg("kind"), arg("name"), arg("version") = 0)
      .def("history", &PyControlStore::history, arg("kind"), arg("name"), arg("limit") = 100)
      .def("commit", &PyControlStore::commit, arg("kind"), arg("name"), arg("document_json"), arg("expected"),
           arg("author"), arg("message"), arg("action"))
      .def("audit", &PyControlStore::audit, arg("object") = "", arg("limit") = 1000)
      .def("verify_audit", &PyControlStore::verify_audit);

  m.def("json_diff", [](const std::string& a, const std::string& b) {
    return json_diff(parse_text(a, "a"), parse_text(b, "b")).dump();
  }, arg("a_json"), arg("b_json"), "RFC 6902 JSON Patch from a to b, as JSON text.");
  m.def("text_diff", [](const std::string& a, const std::string& b, const std::string& a_name, const std::string& b_name) {
    return text_diff(parse_text(a, "a"), parse_text(b, "b"), a_name, b_name);
  }, arg("a_json"), arg("b_json"), arg("a_name"), arg("b_name"), "A unified line diff of the two documents.");

  py::class_<PyMockProvider>(m, "MockProvider")
      .def(py::init<const std::string&, std::uint64_t, int, int>(), arg("config_json") = "{}", arg("seed") = 42,
           arg("threads") = 1, arg("port") = 0)
      .def_property_readonly("port", &PyMockProvider::port)
      .def_property_readonly("base_url", &PyMockProvider::base_url)
      .def("configure", &PyMockProvider::configure, arg("config_json"))
      .def("stats", &PyMockProvider::stats)
      .def("stop", &PyMockProvider::stop);

  // Anthropic Messages <-> the unified (OpenAI-shaped) request and response, with the same
  // code the proxy's /v1/messages ingress runs.
  m.def("anthropic_request_to_openai", [](const std::string& body) {
    ChatRequest r = unwrap(wire::anthropic_request_from_native(parse_text(body, "request")));
    return to_json(r).dump();
  }, arg("body_json"));
  m.def("openai_response_to_anthropic", [](const std::string& body) {
    ChatResponse r = unwrap(chat_response_from_json(parse_text(body, "response")));
    return wire::anthropic_response_to_native(r).dump();
  }, arg("body_json"));
}

}  // namespace modelux::python
