// The text reports and the flag parsing behind `modelux logs` and `modelux spend`. Part of the
// modelux binary, not of the library: they only read the trace store's public API.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "modelux/trace.hpp"

namespace modelux {

// ---- Reports (the text behind `modelux logs` and `modelux spend`) ------------------------------

/// One trace in full: header, decision and reason, each attempt with outcome and timing,
/// cost split into input and output, latency with TTFT, project and config version.
std::string format_trace(const DecisionTrace& t);
/// A one-line-per-trace table (newest first as given), followed by the tracer's counters.
std::string format_trace_list(const std::vector<DecisionTrace>& traces, const TraceCounters& counters);
/// An aligned spend table with a totals line.
std::string format_spend(const SpendReport& report);
/// "forecast  month to date $X; $Y/day recently; month end ~$Z (N days left)".
std::string format_forecast(const CostForecast& f);
/// "90s", "15m", "1h", "24h", "7d", "2w" -> a duration.
Result<Nanos> parse_since(std::string_view s);

/// `modelux logs ...` / `modelux spend ...`: args[0] is the subcommand name, the rest its flags.
/// Output goes to `out`, errors to `err`; returns the process exit code (0 ok, 1 runtime error,
/// 2 usage error). `now` comes from `clock`.
int run_logs(const std::vector<std::string>& args, std::ostream& out, std::ostream& err, const Clock& clock);
int run_spend(const std::vector<std::string>& args, std::ostream& out, std::ostream& err, const Clock& clock);

}  // namespace modelux
