// Shared helpers for the trace tests: temporary database files and traces built from a few
// facts. Not a test itself (the test glob is unit-*.cpp).
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "modelux/trace.hpp"

namespace trace_test {

using namespace modelux;
using namespace std::chrono_literals;

/// A fresh path under the system's temp dir; the file and its -wal/-shm are removed on destruction.
struct TempDb {
  std::string path;
  explicit TempDb(const std::string& name) {
    static std::atomic<int> counter{0};
    auto dir = std::filesystem::temp_directory_path() / "modelux-test-tmp";
    std::filesystem::create_directories(dir);
    path = (dir / (name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".db")).string();
    remove_all();
  }
  ~TempDb() { remove_all(); }
  void remove_all() {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) std::filesystem::remove(path + suffix, ec);
  }
};

/// 2026-01-15 12:00:00 UTC: mid-month, so forecasts have both halves.
inline WallTime base_time() { return WallTime{std::chrono::seconds{1'768'478'400}}; }

struct AttemptSpec {
  std::string model;
  std::string provider;
  bool ok;
  std::string outcome;
  Millis duration;
  double input_usd = 0;
  double output_usd = 0;
  std::int64_t in_tokens = 0;
  std::int64_t out_tokens = 0;
  Millis ttft{0};
  std::string error = {};
};

inline DecisionTrace make_trace(const std::string& id, WallTime time, std::vector<AttemptSpec> attempts,
                                std::string project = "acme", std::string user = "",
                                std::vector<std::pair<std::string, std::string>> tags = {}) {
  DecisionTrace t;
  t.request_id = id;
  t.time = time;
  t.config = "@production";
  t.config_version = 3;
  t.strategy = "fallback";
  t.project = std::move(project);
  t.end_user = std::move(user);
  t.tags = std::move(tags);
  Nanos offset{0};
  std::uint32_t n = 0;
  for (const auto& s : attempts) {
    AttemptRecord a;
    a.id = ++n;
    a.model = s.model;
    a.provider = s.provider;
    a.ok = s.ok;
    a.outcome = s.outcome;
    a.status = s.ok ? 200 : (s.outcome == "rate_limited" ? 429 : 0);
    a.start_offset = offset;
    a.duration = s.duration;
    a.ttft = s.ttft;
    a.cost = {s.input_usd, s.output_usd};
    a.usage.prompt_tokens = s.in_tokens;
    a.usage.completion_tokens = s.out_tokens;
    a.error = s.error;
    a.why_tried = n == 1 ? "primary" : "fallback after " + attempts[n - 2].outcome;
    a.why_ended = s.ok ? "served" : s.outcome;
    offset += s.duration;
    t.cost.input_usd += s.input_usd;
    t.cost.output_usd += s.output_usd;
    if (s.ok) {
      t.ok = true;
      t.served_model = s.model;
      t.served_provider = s.provider;
      t.usage = a.usage;
      t.ttft = a.start_offset + a.ttft;
      t.decision = "served by " + s.model + " (attempt " + std::to_string(n) + ")";
    }
    t.attempts.push_back(std::move(a));
  }
  if (!t.ok) {
    t.error_kind = attempts.empty() ? "budget_exceeded" : attempts.back().outcome;
    t.error_message = attempts.empty() ? "project cap reached" : "all attempts failed";
    t.decision = "failed";
  }
  t.total = offset;
  return t;
}

}  // namespace trace_test
