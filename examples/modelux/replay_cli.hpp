// `modelux replay`: stored traffic against a candidate config (modelux/replay.hpp), printed as
// a table, written as JSON, optionally promoted behind a guard. Part of the binary, not the
// library; it reads the trace store the way `modelux logs` does (trace_cli.hpp).
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "modelux/replay.hpp"

namespace CLI {
class App;
}

namespace modelux {

struct ReplayArgs {
  std::string slug;
  std::string candidate;      ///< file: a routing config or a whole config document
  std::string config;         ///< the deployed config file (providers, catalog, budgets)
  std::string db;             ///< trace store (default: the config's tracing.path, else modelux-traces.db)
  std::string since;          ///< "7d"
  std::size_t limit = 50'000;
  std::string mode = "routing";
  std::uint64_t seed = 1;
  std::string json_out;       ///< --json FILE
  bool promote = false;
  std::string require;        ///< the guard
  std::size_t concurrency = 4;
  double cost_cap_usd = 1.0;
  std::string scorer;         ///< a command: reads one pair as JSON on stdin, prints a number
  bool quiet = false;         ///< no progress bar
};

/// Adds the replay options to `cmd` (the binary's `replay` subcommand).
void add_replay_options(CLI::App& cmd, ReplayArgs& args);

/// Runs `modelux replay`. Exit codes: 0 done (and the guard passed, if given), 1 runtime error
/// (bad store, slug, candidate; promotion impossible), 2 usage error, 3 the guard failed.
/// `publisher` is where --promote writes (null: promotion is refused with a clear error).
int run_replay(const ReplayArgs& args, std::ostream& out, std::ostream& err, const Clock& clock,
               ConfigPublisher* publisher = nullptr);

}  // namespace modelux
