// modelux decision trace: what one request tried, why, and what it cost. Produced by the
// routing session, filled in by the executor, handed to the Tracer off the hot path.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "modelux/catalog.hpp"

namespace modelux {

/// One attempt against one target.
struct AttemptRecord {
  std::uint32_t id = 0;
  std::string model;
  std::string provider;
  Nanos start_offset{0};   ///< from the request's start
  Nanos duration{0};
  Nanos ttft{0};           ///< time to first token (streams), 0 if none
  bool ok = false;
  std::string outcome;     ///< "ok" or an ErrorKind name ("rate_limited", "timeout"...)
  int status = 0;          ///< HTTP status, 0 if none
  std::string error;       ///< error message (never contains keys)
  Usage usage;
  Cost cost;
  std::string why_tried;   ///< "primary", "fallback after rate_limited", "ensemble member 2"...
  std::string why_ended;   ///< "served", "429 from provider", "attempt timeout 2000 ms"...
  int member = -1;         ///< ensemble member index, -1 otherwise
  std::string vote;        ///< ensemble: the member's normalized answer / vote

  /// Resets every field to its default, keeping the strings' capacity (for reuse).
  void clear() noexcept;
};

/// The whole decision for one request.
struct DecisionTrace {
  std::string request_id;
  WallTime time{};
  std::string config;        ///< "@production" or the model asked for
  std::int64_t config_version = 0;
  std::string strategy;
  std::string project;
  std::string org;
  std::string end_user;
  std::string api_key_id;
  std::vector<std::pair<std::string, std::string>> tags;
  bool stream = false;
  /// The request's input tokens as estimated before routing (what budgets reserve on). Set on
  /// failed requests, whose usage is empty, so replay can cost them on a candidate; 0 = unknown.
  std::int64_t est_input_tokens = 0;
  std::int64_t max_tokens = 0;  ///< the request's max_tokens (0 = none): budgets reserve on it
  std::vector<AttemptRecord> attempts;
  bool ok = false;
  std::string served_model;
  std::string served_provider;
  std::string error_kind;     ///< when !ok
  std::string error_message;
  std::string decision;       ///< "served by gpt-4o-mini (attempt 2)"
  std::string reason;         ///< "primary rate_limited, secondary healthy"
  Nanos total{0};
  Nanos ttft{0};
  Usage usage;                ///< of the served answer (ensembles: summed over members)
  Cost cost;                  ///< everything spent on the request, all attempts
  std::vector<std::string> budget_actions;  ///< "reserved 0.0012 on project:acme/daily", "downgraded to @cheap"...
  std::string ab_arm;
  std::string aggregation;    ///< ensemble aggregation summary
  std::string request_body;   ///< only when body capture is on (size-capped, redacted)
  std::string response_body;

  /// Resets every field to its default, keeping the capacity of strings and vectors (a
  /// reused RoutingSession fills the same trace again without allocating).
  void clear() noexcept;

  /// JSON form (the shape traces are exported and returned in).
  Json to_json() const;
  static Result<DecisionTrace> from_json(const Json& j);
};

}  // namespace modelux
