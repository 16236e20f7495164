// Thin forwards to the library's command implementations (modelux/trace.hpp), which parse the
// flags, read the trace store and print the reports. See docs/traces.md.
#include "trace_commands.hpp"

#include <iostream>
#include <string>
#include <vector>

#include "trace_cli.hpp"

namespace {
std::vector<std::string> to_args(int argc, char** argv) { return std::vector<std::string>(argv, argv + argc); }
}  // namespace

int run_logs_command(int argc, char** argv) {
  return modelux::run_logs(to_args(argc, argv), std::cout, std::cerr, modelux::SteadyClock::instance());
}

int run_spend_command(int argc, char** argv) {
  return modelux::run_spend(to_args(argc, argv), std::cout, std::cerr, modelux::SteadyClock::instance());
}
