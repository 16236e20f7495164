// OTLP/HTTP JSON export of decision traces (modelux/otlp.hpp): the span mapping and the
// exporter thread.
#include "modelux/otlp.hpp"

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include "modelux/scrub.hpp"
#include "modelux/transport.hpp"

namespace modelux {

namespace {

std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 1469598103934665603ULL) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string trace_id_of(const std::string& request_id) {
  return hex64(fnv1a(request_id)) + hex64(fnv1a(request_id, 0x84222325cbf29ce4ULL));
}

std::string span_id_of(const std::string& request_id, std::string_view which) {
  std::uint64_t v = fnv1a(which, fnv1a(request_id + "/"));
  if (v == 0) v = 1;  // an all-zero span id is invalid
  return hex64(v);
}

std::string nanos_of(WallTime t) {
  return std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

Json str_attr(std::string key, std::string v) {
  scrub(v);
  return Json{{"key", std::move(key)}, {"value", {{"stringValue", std::move(v)}}}};
}
Json int_attr(std::string key, std::int64_t v) {
  return Json{{"key", std::move(key)}, {"value", {{"intValue", std::to_string(v)}}}};
}
Json dbl_attr(std::string key, double v) { return Json{{"key", std::move(key)}, {"value", {{"doubleValue", v}}}}; }
Json bool_attr(std::string key, bool v) { return Json{{"key", std::move(key)}, {"value", {{"boolValue", v}}}}; }

// GenAI semantic conventions' well-known gen_ai.provider.name values for the providers modelux
// speaks to; any other provider keeps its configured name.
std::string genai_provider(std::string_view p) {
  if (p == "bedrock") return "aws.bedrock";
  if (p == "gemini" || p == "google") return "gcp.gemini";
  if (p == "vertex") return "gcp.vertex_ai";
  if (p == "azure") return "azure.ai.openai";
  return std::string(p);
}

constexpr int kSpanKindServer = 2, kSpanKindClient = 3;
constexpr int kStatusOk = 1, kStatusError = 2;

Json request_span(const DecisionTrace& t, const std::string& trace_id, const std::string& root_id) {
  const std::string op = "chat";
  std::string requested = t.config;
  Json attrs = Json::array();
  attrs.push_back(str_attr("gen_ai.operation.name", op));
  attrs.push_back(str_attr("gen_ai.request.model", requested));
  if (!t.served_model.empty()) attrs.push_back(str_attr("gen_ai.response.model", t.served_model));
  if (!t.served_provider.empty()) attrs.push_back(str_attr("gen_ai.provider.name", genai_provider(t.served_provider)));
  attrs.push_back(int_attr("gen_ai.usage.input_tokens", t.usage.prompt_tokens));
  attrs.push_back(int_attr("gen_ai.usage.output_tokens", t.usage.completion_tokens));
  if (t.max_tokens > 0) attrs.push_back(int_attr("gen_ai.request.max_tokens", t.max_tokens));
  attrs.push_back(str_attr("modelux.request_id", t.request_id));
  if (t.config_version) attrs.push_back(int_attr("modelux.config_version", t.config_version));
  if (!t.strategy.empty()) attrs.push_back(str_attr("modelux.strategy", t.strategy));
  if (!t.project.empty()) attrs.push_back(str_attr("modelux.project", t.project));
  if (!t.end_user.empty()) attrs.push_back(str_attr("modelux.end_user", t.end_user));
  if (!t.decision.empty()) attrs.push_back(str_attr("modelux.decision", t.decision));
  if (!t.reason.empty()) attrs.push_back(str_attr("modelux.reason", t.reason));
  attrs.push_back(dbl_attr("modelux.cost_usd", t.cost.total()));
  attrs.push_back(int_attr("modelux.attempts", static_cast<std::int64_t>(t.attempts.size())));
  attrs.push_back(bool_attr("modelux.stream", t.stream));
  if (t.ttft.count() > 0) attrs.push_back(dbl_attr("modelux.ttft_ms", static_cast<double>(t.ttft.count()) / 1e6));
  for (const auto& [k, v] : t.tags) attrs.push_back(str_attr("modelux.tag." + k, v));
  if (!t.ok) attrs.push_back(str_attr("error.type", t.error_kind.empty() ? "_OTHER" : t.error_kind));
  Json status = t.ok ? Json{{"code", kStatusOk}} : Json{{"code", kStatusError}, {"message", scrubbed(t.error_message)}};
  return Json{{"traceId", trace_id},
              {"spanId", root_id},
              {"name", op + " " + scrubbed(requested)},
              {"kind", kSpanKindServer},
              {"startTimeUnixNano", nanos_of(t.time)},
              {"endTimeUnixNano", nanos_of(t.time + std::chrono::duration_cast<WallTime::duration>(t.total))},
              {"attributes", std::move(attrs)},
              {"status", std::move(status)}};
}

Json attempt_span(const DecisionTrace& t, const AttemptRecord& a, std::size_t index, const std::string& trace_id,
                  const std::string& root_id) {
  Json attrs = Json::array();
  attrs.push_back(str_attr("gen_ai.operation.name", "chat"));
  attrs.push_back(str_attr("gen_ai.provider.name", genai_provider(a.provider)));
  attrs.push_back(str_attr("gen_ai.request.model", a.model));
  if (a.ok) attrs.push_back(str_attr("gen_ai.response.model", a.model));
  attrs.push_back(int_attr("gen_ai.usage.input_tokens", a.usage.prompt_tokens));
  attrs.push_back(int_attr("gen_ai.usage.output_tokens", a.usage.completion_tokens));
  if (a.status) attrs.push_back(int_attr("http.response.status_code", a.status));
  attrs.push_back(int_attr("modelux.attempt.index", static_cast<std::int64_t>(index)));
  if (!a.why_tried.empty()) attrs.push_back(str_attr("modelux.attempt.why_tried", a.why_tried));
  if (!a.why_ended.empty()) attrs.push_back(str_attr("modelux.attempt.why_ended", a.why_ended));
  attrs.push_back(dbl_attr("modelux.cost_usd", a.cost.total()));
  if (a.ttft.count() > 0) attrs.push_back(dbl_attr("modelux.ttft_ms", static_cast<double>(a.ttft.count()) / 1e6));
  if (!a.ok) attrs.push_back(str_attr("error.type", a.outcome.empty() ? "_OTHER" : a.outcome));
  Json status = a.ok ? Json{{"code", kStatusOk}} : Json{{"code", kStatusError}, {"message", scrubbed(a.error)}};
  const WallTime start = t.time + std::chrono::duration_cast<WallTime::duration>(a.start_offset);
  return Json{{"traceId", trace_id},
              {"spanId", span_id_of(t.request_id, "attempt-" + std::to_string(index))},
              {"parentSpanId", root_id},
              {"name", "chat " + scrubbed(a.model)},
              {"kind", kSpanKindClient},
              {"startTimeUnixNano", nanos_of(start)},
              {"endTimeUnixNano", nanos_of(start + std::chrono::duration_cast<WallTime::duration>(a.duration))},
              {"attributes", std::move(attrs)},
              {"status", std::move(status)}};
}

}  // namespace

Json otlp_request_json(const std::vector<DecisionTrace>& traces, const std::string& service_name) {
  Json spans = Json::array();
  for (const auto& t : traces) {
    const std::string trace_id = trace_id_of(t.request_id), root_id = span_id_of(t.request_id, "request");
    spans.push_back(request_span(t, trace_id, root_id));
    for (std::size_t i = 0; i < t.attempts.size(); ++i) spans.push_back(attempt_span(t, t.attempts[i], i, trace_id, root_id));
  }
  Json resource{{"attributes", Json::array({str_attr("service.name", service_name),
                                            str_attr("service.version", std::string(version())),
                                            str_attr("telemetry.sdk.name", "modelux")})}};
  Json scope{{"scope", {{"name", "modelux"}, {"version", std::string(version())}}}, {"spans", std::move(spans)}};
  return Json{{"resourceSpans", Json::array({Json{{"resource", std::move(resource)}, {"scopeSpans", Json::array({std::move(scope)})}}})}};
}

Result<OtlpOptions> parse_otlp_options(const Json& j, const std::string& path) {
  if (!j.is_object()) return fail(ErrorKind::invalid_config, "'otlp' must be an object", path);
  OtlpOptions o;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const Json& v = it.value();
    const std::string p = path + "." + k;
    if (k == "endpoint" || k == "service_name") {
      if (!v.is_string() || v.get<std::string>().empty()) return fail(ErrorKind::invalid_config, k + " must be a non-empty string", p);
      (k == "endpoint" ? o.endpoint : o.service_name) = v.get<std::string>();
    } else if (k == "headers") {
      if (!v.is_object()) return fail(ErrorKind::invalid_config, "headers must be an object of strings", p);
      for (auto h = v.begin(); h != v.end(); ++h) {
        if (!h.value().is_string()) return fail(ErrorKind::invalid_config, "headers must be an object of strings", p + "." + h.key());
        add_secret(h.value().get<std::string>());  // a collector API key: never in any output
        o.headers.emplace_back(h.key(), h.value().get<std::string>());
      }
    } else if (k == "queue_capacity" || k == "batch_size" || k == "interval_ms" || k == "timeout_ms") {
      if (!v.is_number_integer() || v.get<std::int64_t>() <= 0 || v.get<std::int64_t>() > 10'000'000)
        return fail(ErrorKind::invalid_config, k + " must be a positive integer", p);
      auto n = v.get<std::int64_t>();
      if (k == "queue_capacity") o.queue_capacity = static_cast<std::size_t>(n);
      else if (k == "batch_size") o.batch_size = static_cast<std::size_t>(n);
      else if (k == "interval_ms") o.interval = Millis{n};
      else o.timeout = Millis{n};
    } else {
      return fail(ErrorKind::invalid_config, "unknown key '" + k + "'", p);
    }
  }
  if (o.endpoint.empty()) return fail(ErrorKind::invalid_config, "otlp needs an 'endpoint' (e.g. http://collector:4318/v1/traces)", path + ".endpoint");
  if (auto u = parse_url(o.endpoint); !u)
    return fail(ErrorKind::invalid_config, "endpoint is not an http(s) URL: " + u.error().message, path + ".endpoint");
  return o;
}

struct OtlpExporter::Impl {
  OtlpOptions opts;
  mutable std::mutex mu;
  std::condition_variable wake, done;
  std::deque<DecisionTrace> queue;
  bool stop = false;
  std::uint64_t flush_target = 0;
  std::uint64_t offered = 0, exported = 0, spans = 0, dropped = 0, failed = 0, settled = 0;
  std::string last_error;
  std::thread thread;

  net::io_context ioc;
  std::shared_ptr<Transport> transport;

  explicit Impl(OtlpOptions o) : opts(std::move(o)), transport(make_http_transport(ioc.get_executor())) {}

  Result<void> post(const std::string& body) {
    HttpRequestSpec spec;
    spec.method = "POST";
    spec.url = opts.endpoint;
    spec.headers = opts.headers;
    spec.headers.emplace_back("content-type", "application/json");
    spec.body = body;
    Instant deadline = std::chrono::steady_clock::now() + opts.timeout;
    auto fut = net::co_spawn(ioc, transport->send(spec, deadline), net::use_future);
    ioc.restart();
    ioc.run();
    auto r = fut.get();
    if (!r) return fail(r.error());
    if (r->status < 200 || r->status >= 300)
      return fail(ErrorKind::server_error, "the collector answered " + std::to_string(r->status) + ": " + r->body.substr(0, 200));
    return {};
  }

  void run() {
    for (;;) {
      std::vector<DecisionTrace> batch;
      bool stopping;
      {
        std::unique_lock lk(mu);
        wake.wait_for(lk, opts.interval, [&] { return stop || flush_target > settled || queue.size() >= opts.batch_size; });
        stopping = stop;
        while (!queue.empty() && batch.size() < opts.batch_size) {
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      if (!batch.empty()) {
        const std::string body = otlp_request_json(batch, opts.service_name).dump(-1, ' ', false, Json::error_handler_t::replace);
        std::size_t n_spans = 0;
        for (const auto& t : batch) n_spans += 1 + t.attempts.size();
        Result<void> r = post(body);
        if (!r && !stopping) {
          {
            std::lock_guard lk(mu);
            ++failed;
            last_error = scrubbed(r.error().message);
          }
          r = post(body);  // one retry: a collector restart should not lose a batch
        }
        std::lock_guard lk(mu);
        if (r) {
          exported += batch.size();
          spans += n_spans;
        } else {
          ++failed;
          dropped += batch.size();
          last_error = scrubbed(r.error().message);
          if (stopping) {
            // Shutting down with an unreachable collector: one timeout, not one per batch.
            dropped += queue.size();
            settled += queue.size();
            queue.clear();
          }
        }
        settled += batch.size();
        done.notify_all();
      }
      std::lock_guard lk(mu);
      if (stopping && queue.empty()) break;
      done.notify_all();
    }
  }
};

OtlpExporter::OtlpExporter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::shared_ptr<OtlpExporter>> OtlpExporter::create(OtlpOptions options) {
  if (auto u = parse_url(options.endpoint); !u)
    return fail(ErrorKind::invalid_config, "OTLP endpoint is not an http(s) URL: " + u.error().message);
  if (options.batch_size == 0) options.batch_size = 1;
  if (options.queue_capacity == 0) options.queue_capacity = 1;
  for (const auto& [k, v] : options.headers) add_secret(v);
  auto impl = std::make_unique<Impl>(std::move(options));
  Impl* p = impl.get();
  std::shared_ptr<OtlpExporter> e(new OtlpExporter(std::move(impl)));
  p->thread = std::thread([p] { p->run(); });
  return e;
}

OtlpExporter::~OtlpExporter() {  // bounded: at most one POST timeout when the collector is gone
  {
    std::lock_guard lk(impl_->mu);
    impl_->stop = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

bool OtlpExporter::offer(const DecisionTrace& t) noexcept {
  std::lock_guard lk(impl_->mu);
  ++impl_->offered;
  if (impl_->stop || impl_->queue.size() >= impl_->opts.queue_capacity) {
    ++impl_->dropped;
    ++impl_->settled;
    return false;
  }
  try {
    impl_->queue.push_back(t);
  } catch (...) {
    ++impl_->dropped;
    ++impl_->settled;
    return false;
  }
  if (impl_->queue.size() >= impl_->opts.batch_size) impl_->wake.notify_one();
  return true;
}

void OtlpExporter::flush() {
  std::unique_lock lk(impl_->mu);
  const std::uint64_t target = impl_->offered;
  impl_->flush_target = std::max(impl_->flush_target, target);
  impl_->wake.notify_all();
  impl_->done.wait(lk, [&] { return impl_->settled >= target || !impl_->thread.joinable(); });
}

OtlpStats OtlpExporter::stats() const {
  std::lock_guard lk(impl_->mu);
  OtlpStats s;
  s.offered = impl_->offered;
  s.exported = impl_->exported;
  s.spans_exported = impl_->spans;
  s.dropped = impl_->dropped;
  s.failed_posts = impl_->failed;
  s.queued = impl_->queue.size();
  s.last_error = impl_->last_error;
  return s;
}

}  // namespace modelux
