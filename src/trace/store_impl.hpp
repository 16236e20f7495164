// TraceStore's internals, shared by store.cpp (schema, writes, queries) and analytics.cpp.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

#include "modelux/trace.hpp"
#include "trace/sqlite.hpp"

namespace modelux {

namespace trace_detail {
WallTime from_us(std::int64_t us);
std::int64_t micros(WallTime t);
}  // namespace trace_detail

struct TraceStore::Impl {
  using Bound = std::variant<std::int64_t, double, std::string>;

  sqlite3* db = nullptr;
  std::string path;
  bool read_only = false;
  std::mutex mu;  // one connection, every call serialized

  std::string body_buf;  // reused by insert(): one growing buffer, no per-trace allocation
  trace_detail::Stmt ins_trace, ins_attempt, ins_tag, del_trace, del_attempts, del_tags, bump_meta;

  ~Impl();
  Result<void> exec(const char* sql, std::string_view what);
  Result<trace_detail::Stmt> prepare(std::string_view sql);
  Result<void> prepare_writes();
  /// Brings an older file's schema up to date (scan.cpp): additive columns only, backfilled
  /// from each row's JSON body, so older modelux builds still read the file.
  Result<void> migrate();
  /// Whether `traces` has the columns migrate() adds (a read-only open of an old file does not).
  bool has_replay_columns();
  Result<void> insert(const DecisionTrace& t);
  Result<void> bump(const char* key, std::uint64_t delta);
  Result<void> write_locked(const std::vector<DecisionTrace>& traces, std::uint64_t written, std::uint64_t dropped,
                            std::uint64_t errors, std::optional<WallTime> now);
  std::string where_clause(const TraceQuery& q, std::vector<Bound>& binds);
  void bind_all(trace_detail::Stmt& s, const std::vector<Bound>& binds, int first = 1);
  Result<std::uint64_t> for_each(const TraceQuery& q, const std::function<void(DecisionTrace&&)>& fn);
  Result<DecisionTrace> parse_json_body(std::string_view id, std::string_view body);
};

}  // namespace modelux
