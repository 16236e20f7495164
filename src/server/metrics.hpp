// The proxy's Prometheus metrics (GET /metrics), on prometheus-cpp.
//
// Two kinds of series:
//   * recorded per request from its decision trace (observe()): per provider, model and config
//     — upstream attempts by outcome, attempt latency and time to first token (histograms),
//     tokens and cost (counters); per config — requests by outcome and their latency.
//   * read at scrape time (a prometheus::Collectable): the server's own counters, breaker
//     state per target, budget spend and limit per ledger, the trace queue, upstream pool.
//
// Cost on the hot path: observe() finds its series in a per-thread cache (no lock, no label
// map built), then bumps prometheus-cpp's counters (atomics) and histograms (a per-series mutex
// held for a bucket increment). A series missing from the thread's cache is created or found
// once under prometheus-cpp's family lock. Label values that come from callers are bounded: a
// request rejected before routing (unknown model or config) is counted under config="unknown".
//
// Threading: observe() and render() may be called from any thread at once.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "modelux/decision.hpp"
#include "modelux/server.hpp"

namespace modelux::proxy {

class ProxyMetrics {
 public:
  /// `state` is read at scrape time (server counters, router, http server); it must outlive this.
  explicit ProxyMetrics(const Proxy::State& state);
  ~ProxyMetrics();
  ProxyMetrics(const ProxyMetrics&) = delete;
  ProxyMetrics& operator=(const ProxyMetrics&) = delete;

  /// Records one finished request (chat or embeddings) from its trace.
  void observe(const DecisionTrace& t);
  /// The text exposition format (version 0.0.4) of every series, secrets scrubbed.
  std::string render() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace modelux::proxy
