// `modelux configs`, `modelux audit`, `modelux webhooks` (control_cli.cpp): entry points the
// modelux binary dispatches to. argv[0] is the command name, the rest its arguments.
#pragma once

namespace modelux::cli {
int run_configs_command(int argc, char** argv);
int run_audit_command(int argc, char** argv);
int run_webhooks_command(int argc, char** argv);
}  // namespace modelux::cli
