// Embedding modelux in a C++ application: route one request through "@production" in-process.
// Run `modelux mock --port 8089` first (or point the providers at real APIs).
#include <cstdio>

#include "modelux/router.hpp"

int main() {
  auto config = modelux::Config::embedded_defaults();  // or Config::load_file("modelux.json")
  if (!config) {
    std::fprintf(stderr, "%s\n", config.error().describe().c_str());
    return 1;
  }
  auto router = modelux::Router::create(std::move(*config));
  if (!router) {
    std::fprintf(stderr, "%s\n", router.error().describe().c_str());
    return 1;
  }
  modelux::ChatRequest req;
  req.model = "@production";
  req.messages.push_back(modelux::Message::user("Hello!"));
  modelux::CallContext ctx;
  ctx.project = "example";
  modelux::Completion c = (*router)->complete(req, ctx);
  if (!c.result) {
    std::fprintf(stderr, "failed: %s\n", c.result.error().describe().c_str());
    return 1;
  }
  std::printf("%s\n(served by %s, decision: %s)\n", c.result->text().c_str(), c.served.key().c_str(), c.trace.decision.c_str());
  return 0;
}
