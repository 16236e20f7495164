// `modelux configs`, `modelux audit`, `modelux webhooks` (control_cli.cpp): entry points the
// modelux binary dispatches to. argv[0] is the command name, the rest its arguments.
#pragma once

#include <memory>
#include <string>

#include "modelux/replay.hpp"

namespace modelux::cli {
int run_configs_command(int argc, char** argv);
int run_audit_command(int argc, char** argv);
int run_webhooks_command(int argc, char** argv);
/// Where `modelux replay --promote` writes: the control store file `db`, else the one the
/// config file `config` names (server.control.db, or control.db next to tracing.path).
Result<std::unique_ptr<ConfigPublisher>> open_config_publisher(const std::string& db, const std::string& config);
}  // namespace modelux::cli
