// modelux otlp: optional export of decision traces as OpenTelemetry spans over OTLP/HTTP with
// the JSON encoding (POST <endpoint>, Content-Type application/json), following the GenAI
// semantic conventions: one SERVER span per request and one CLIENT child span per attempt.
//
// Off the hot path: the Tracer's writer thread offers each written (already scrubbed) trace;
// offer() copies it into a bounded queue and never blocks (when full the trace is dropped and
// counted). The exporter's own thread batches queued traces and POSTs them; a failed POST is
// retried once after `interval`, then its spans are dropped and counted. Nothing here touches
// a request's thread.
//
// Threading: offer(), stats() and flush() are thread-safe; everything else runs on the
// exporter's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "modelux/decision.hpp"
#include "modelux/wire.hpp"

namespace modelux {

struct OtlpOptions {
  std::string endpoint;             ///< "http://collector:4318/v1/traces" (http or https)
  Headers headers{};                ///< extra request headers (e.g. an API key for the collector)
  std::string service_name = "modelux";  ///< the resource's service.name
  std::size_t queue_capacity = 4096;  ///< traces waiting to be exported; more are dropped
  std::size_t batch_size = 256;       ///< traces per POST
  Millis interval{1000};              ///< a partial batch is sent at least this often
  Millis timeout{5000};               ///< per POST
};

/// Counters since the exporter started. Invariant: offered == exported + dropped + queued +
/// in flight.
struct OtlpStats {
  std::uint64_t offered = 0;         ///< traces handed to offer()
  std::uint64_t exported = 0;        ///< traces in a POST the collector accepted (2xx)
  std::uint64_t spans_exported = 0;  ///< spans in those (request + attempt spans)
  std::uint64_t dropped = 0;         ///< queue full, or a batch the collector refused twice
  std::uint64_t failed_posts = 0;    ///< POSTs that failed (network error or non-2xx)
  std::size_t queued = 0;
  std::string last_error;            ///< scrubbed
};

/// Validates an OTLP "tracing.otlp" config object ({"endpoint", "headers", "service_name",
/// "queue_capacity", "batch_size", "interval_ms", "timeout_ms"}); errors carry their JSON path
/// under `path`.
Result<OtlpOptions> parse_otlp_options(const Json& j, const std::string& path = "$.tracing.otlp");

/// The OTLP/JSON ExportTraceServiceRequest for `traces` (what the exporter POSTs). Trace ids
/// and span ids derive from the request id (stable: exporting a trace twice gives the same
/// ids). Every string passes the scrubber.
Json otlp_request_json(const std::vector<DecisionTrace>& traces, const std::string& service_name);

class OtlpExporter {
 public:
  /// Starts the exporter thread. An endpoint that is not an http(s) URL is invalid_config.
  static Result<std::shared_ptr<OtlpExporter>> create(OtlpOptions options);
  ~OtlpExporter();  ///< sends what is queued, then stops; a failed POST at shutdown drops the rest (one timeout at most)
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  /// Queues a copy of `t`. false = dropped (queue full), counted.
  bool offer(const DecisionTrace& t) noexcept;
  /// Waits until everything offered before the call was exported or dropped (tests, shutdown).
  void flush();
  OtlpStats stats() const;

  struct Impl;

 private:
  explicit OtlpExporter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace modelux
