// `fallback`: an ordered chain of attempts with per-attempt timeouts, retry_on classes, a total
// budget bounding the whole request, jittered backoff for same-target retries and 429
// absorption per `on_rate_limit`.
#pragma once

#include "policy/strategy.hpp"

namespace modelux {

/// Backoff between retries of the same entry.
struct Backoff {
  Nanos initial = std::chrono::milliseconds(100);
  Nanos max = std::chrono::milliseconds(2000);
  double jitter = 0.2;
};

/// One link of a chain.
struct ChainEntry {
  std::unique_ptr<Strategy> node;
  Nanos timeout{0};  ///< nested configs: bounds the whole sub-node (0 = none); leaves carry their own
  int retries = 0;
  std::string label;  ///< "claude-haiku-4-5" or "@slug"/strategy name
};

/// How a chain fails over: shared by fallback, cost_optimized and latency_optimized.
struct ChainOptions {
  std::uint32_t retry_mask = 0;
  Nanos total{0};
  Backoff backoff;
  RateLimitMode mode = RateLimitMode::fallback;
  bool panic = true;  ///< on_all_open: "try_anyway" (true) or "fail"
  int retries = 0;    ///< default per-entry retries
  Nanos max_stream{0};  ///< bound on any committed stream of the chain (0 = none); entries may set a tighter one
  Nanos ttft{0};        ///< streams: default first-output limit of every entry (0 = none); an entry's own wins
  Nanos stall{0};       ///< streams: default between-chunk limit of every entry (0 = none); an entry's own wins
};

/// Reads retry_on, total_budget_ms, backoff, on_rate_limit, on_all_open, retries,
/// max_stream_ms, ttft_timeout_ms and stall_timeout_ms.
Result<ChainOptions> read_chain_options(const Json& cfg, const std::string& path);

/// Compiles one chain entry (model name, "@slug", {"model":..,"timeout_ms":..,"retries":..},
/// {"config":..}, inline strategy); checks its timeout against opts.total.
Result<ChainEntry> compile_chain_entry(const Json& ej, const std::string& ep, const PolicyResolver& r,
                                       const ChainOptions& opts);

/// Runs `order` (pointers into entries that outlive the state) as a fallback chain.
StatePtr start_chain(SessionCore& s, const ChainOptions& opts, std::vector<const ChainEntry*> order,
                                           const StartArgs& a);

Result<std::unique_ptr<Strategy>> compile_fallback(const Json& cfg, const std::string& path, const PolicyResolver& r);

/// Default retry_on: 429, 5xx, timeout, connection.
std::uint32_t default_retry_mask() noexcept;

}  // namespace modelux
