// `modelux logs` and `modelux spend`: entry points the modelux binary dispatches to.
// argv[0] is the subcommand name ("logs" / "spend"), the rest are its flags.
#pragma once

int run_logs_command(int argc, char** argv);
int run_spend_command(int argc, char** argv);
