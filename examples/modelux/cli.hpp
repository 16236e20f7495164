#pragma once
#include <optional>
#include <string>
#include <vector>

namespace modelux::cli {
/// Value of `--name value` or `--name=value`; nullopt when absent.
std::optional<std::string> flag(const std::vector<std::string>& args, const std::string& name);
/// Every value of a repeated flag.
std::vector<std::string> flags(const std::vector<std::string>& args, const std::string& name);
bool has(const std::vector<std::string>& args, const std::string& name);
int run_demo(const std::vector<std::string>& args);
/// Blocks until SIGINT or SIGTERM.
void wait_for_signal();
}  // namespace modelux::cli
