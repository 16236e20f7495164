// Test support for the executor tests, over sockets (unit-app-router) and on virtual time
// (unit-app-executor-time): one config shape for both, three provider families on one mock
// provider, a three-target fallback chain across them, and a plain request.
#pragma once

#include <string>
#include <utility>

#include "modelux/core.hpp"
#include "modelux/wire.hpp"

namespace modelux::test {

/// A router config document: anthropic, openai (a pool of two keys) and google, all served by
/// the mock provider at `base`, with the routing configs `routing`.
inline Json mock_providers_config(const std::string& base, Json routing) {
  return {{"providers",
           {{"anthropic", {{"base_url", base}, {"api_key", "k-a"}}},
            {"openai", {{"base_url", base + "/v1"}, {"api_keys", {"k-o1", "k-o2"}}}},
            {"google", {{"base_url", base}, {"api_key", "k-g"}}}}},
          {"routing", std::move(routing)}};
}

/// A fallback chain over one model of each family: claude-haiku-4-5, gpt-4o-mini,
/// gemini-2.5-flash, each with `attempt_ms`, bounded by `total_budget_ms`.
inline Json chain(int total_budget_ms = 4000, int attempt_ms = 1500) {
  return {{"strategy", "fallback"},
          {"attempts", {{{"model", "claude-haiku-4-5"}, {"timeout_ms", attempt_ms}},
                        {{"model", "gpt-4o-mini"}, {"timeout_ms", attempt_ms}},
                        {{"model", "gemini-2.5-flash"}, {"timeout_ms", attempt_ms}}}},
          {"retry_on", {"429", "5xx", "timeout", "connection", "malformed"}},
          {"total_budget_ms", total_budget_ms}};
}

/// A one-message request for `model` ("@slug" or a catalog model).
inline ChatRequest ask(std::string model, bool stream = false) {
  ChatRequest r;
  r.model = std::move(model);
  r.messages.push_back(Message::user("hello"));
  r.stream = stream;
  return r;
}

}  // namespace modelux::test
