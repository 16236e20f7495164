// The modelux binary's commands that live in their own files.
#pragma once

#include <string>

namespace modelux::cli {
/// `modelux demo`: the mock provider and the proxy on 127.0.0.1 with the embedded defaults,
/// real requests through `@production`, and each decision trace printed.
int run_demo();
/// `modelux mcp`: MCP over stdio, each message relayed to the proxy's /mcp (mcp_stdio.cpp).
int run_mcp_stdio(std::string url, std::string key);
/// Blocks until SIGINT or SIGTERM (signals must be blocked in every thread first).
int wait_for_signal();
}  // namespace modelux::cli
