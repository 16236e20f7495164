// The trace store's schema migration and its column-only scan (what replay reads).
//
// Schema 2 adds to `traces` the routing inputs that lived only in the JSON body: stream,
// api_key_id, est_input_tokens, max_tokens and whether a budget downgrade rerouted the request.
// The migration is additive (ALTER TABLE ADD COLUMN with defaults), backfilled from each row's
// body, and runs once inside the open's schema transaction; older builds still read the file.
// scan() reads those columns plus the attempts and tags side tables (point lookups on their
// primary keys), so 50,000 traces never touch a JSON parser.
//
// Schema 3 swaps five indexes for one (see store.cpp): nothing else changes, so older
// builds still read and write the file (they recreate their indexes when they open it).
#include "trace/store_impl.hpp"

namespace modelux {

using trace_detail::sqlite_error;
using trace_detail::Stmt;

namespace {
constexpr const char* kAddColumns[] = {
    "ALTER TABLE traces ADD COLUMN stream INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE traces ADD COLUMN api_key_id TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE traces ADD COLUMN est_input_tokens INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE traces ADD COLUMN max_tokens INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE traces ADD COLUMN downgraded INTEGER NOT NULL DEFAULT 0",
};
// Rows written before schema 2 carry these fields in their JSON body only.
constexpr const char* kBackfill =
    "UPDATE traces SET stream=coalesce(json_extract(body,'$.stream'),0), "
    "api_key_id=coalesce(json_extract(body,'$.api_key_id'),''), "
    "est_input_tokens=coalesce(json_extract(body,'$.est_input_tokens'),0), "
    "max_tokens=coalesce(json_extract(body,'$.max_tokens'),0), "
    "downgraded=EXISTS(SELECT 1 FROM json_each(body,'$.budget_actions') WHERE value LIKE 'downgrade to %')";
}  // namespace

bool TraceStore::Impl::has_replay_columns() {
  Stmt s;
  if (s.prepare(db, "SELECT count(*) FROM pragma_table_info('traces') WHERE name='downgraded'") != SQLITE_OK)
    return false;
  return s.step() == SQLITE_ROW && s.i64(0) > 0;
}

Result<void> TraceStore::Impl::migrate() {
  if (!has_replay_columns()) {
    for (const char* sql : kAddColumns)
      if (auto r = exec(sql, "migrate schema (add replay columns)"); !r) return r;
    if (auto r = exec(kBackfill, "migrate schema (backfill replay columns)"); !r) return r;
  }
  // Schema 3: the timeline index (time, end user, project, request id; created by the schema
  // script) replaces the indexes on time, (end user, time) and (project, time) of `traces` and
  // the side tables' time and (key, value, time) indexes. Dropping is all that is left to do. It
  // runs on every open (a no-op once they are gone) because an older build that opens the file
  // recreates them.
  if (auto r = exec("DROP INDEX IF EXISTS traces_end_user; DROP INDEX IF EXISTS traces_time; "
                    "DROP INDEX IF EXISTS traces_project; DROP INDEX IF EXISTS trace_tags_kv; "
                    "DROP INDEX IF EXISTS trace_attempts_time",
                    "migrate schema (indexes)");
      !r)
    return r;
  Stmt v;
  if (v.prepare(db, "SELECT value FROM trace_meta WHERE key='schema_version'") != SQLITE_OK)
    return fail(sqlite_error(db, sqlite3_errcode(db), "migrate schema", path));
  if (v.step() == SQLITE_ROW && v.i64(0) >= 3) return {};
  v.finalize();
  return exec("INSERT INTO trace_meta(key,value) VALUES('schema_version',3) "
              "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
              "migrate schema");
}

Result<std::uint64_t> TraceStore::scan(const TraceQuery& q, const std::function<void(TraceSummary&&)>& fn) {
  std::lock_guard lock(impl_->mu);
  const bool cols = impl_->has_replay_columns();
  auto col = [&](const char* name, const char* json_default) {
    return cols ? std::string("t.") + name
                : std::string("coalesce(json_extract(t.body,'$.") + name + "')," + json_default + ")";
  };
  std::vector<Impl::Bound> binds;
  std::string sql =
      "SELECT t.request_id,t.time_us,t.config,t.project,t.org,t.end_user," + col("api_key_id", "''") + "," +
      col("stream", "0") + ",t.input_tokens,t.output_tokens," + col("est_input_tokens", "0") + "," +
      col("max_tokens", "0") +
      ",t.ok,t.served_model,t.served_provider,t.error_kind,t.total_ns,t.ttft_ns,t.input_usd+t.output_usd,"
      "t.failed_over," +
      (cols ? std::string("t.downgraded")
            : std::string("EXISTS(SELECT 1 FROM json_each(t.body,'$.budget_actions') WHERE value LIKE "
                          "'downgrade to %')")) +
      " FROM traces t" + impl_->where_clause(q, binds) +
      (q.newest_first ? " ORDER BY t.time_us DESC, t.rowid DESC" : " ORDER BY t.time_us, t.rowid");
  if (q.limit > 0) sql += " LIMIT " + std::to_string(q.limit);
  auto s = impl_->prepare(sql);
  if (!s) return fail(s.error());
  impl_->bind_all(*s, binds);
  auto att = impl_->prepare(
      "SELECT model,provider,ok,outcome,status,duration_ns,ttft_ns FROM trace_attempts WHERE request_id=? ORDER BY idx");
  if (!att) return fail(att.error());
  auto tags = impl_->prepare("SELECT key,value FROM trace_tags WHERE request_id=?");
  if (!tags) return fail(tags.error());

  std::uint64_t n = 0;
  int rc;
  while ((rc = s->step()) == SQLITE_ROW) {
    TraceSummary t;
    t.request_id = s->text(0);
    t.time = trace_detail::from_us(s->i64(1));
    t.config = s->text(2);
    t.project = s->text(3);
    t.org = s->text(4);
    t.end_user = s->text(5);
    t.api_key_id = s->text(6);
    t.stream = s->i64(7) != 0;
    t.input_tokens = s->i64(8);
    t.output_tokens = s->i64(9);
    t.est_input_tokens = s->i64(10);
    t.max_tokens = s->i64(11);
    t.ok = s->i64(12) != 0;
    t.served_model = s->text(13);
    t.served_provider = s->text(14);
    t.error_kind = s->text(15);
    t.total = Nanos{s->i64(16)};
    t.ttft = Nanos{s->i64(17)};
    t.cost_usd = s->dbl(18);
    t.failed_over = s->i64(19) != 0;
    t.downgraded = s->i64(20) != 0;

    att->reset();
    att->bind(1, std::string_view(t.request_id));
    while ((rc = att->step()) == SQLITE_ROW) {
      AttemptSummary a;
      a.model = att->text(0);
      a.provider = att->text(1);
      a.ok = att->i64(2) != 0;
      a.outcome = att->text(3);
      a.status = static_cast<int>(att->i64(4));
      a.duration = Nanos{att->i64(5)};
      a.ttft = Nanos{att->i64(6)};
      t.attempts.push_back(std::move(a));
    }
    if (rc != SQLITE_DONE) return fail(sqlite_error(impl_->db, rc, "read attempts", impl_->path));
    tags->reset();
    tags->bind(1, std::string_view(t.request_id));
    while ((rc = tags->step()) == SQLITE_ROW) t.tags.emplace_back(tags->text(0), tags->text(1));
    if (rc != SQLITE_DONE) return fail(sqlite_error(impl_->db, rc, "read tags", impl_->path));
    fn(std::move(t));
    ++n;
  }
  if (rc != SQLITE_DONE) return fail(sqlite_error(impl_->db, rc, "scan traces", impl_->path));
  return n;
}

Result<std::vector<std::pair<std::string, std::uint64_t>>> TraceStore::configs() {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->prepare("SELECT config,count(*) c FROM traces GROUP BY config ORDER BY c DESC, config");
  if (!s) return fail(s.error());
  std::vector<std::pair<std::string, std::uint64_t>> out;
  int rc;
  while ((rc = s->step()) == SQLITE_ROW) out.emplace_back(std::string(s->text(0)), static_cast<std::uint64_t>(s->i64(1)));
  if (rc != SQLITE_DONE) return fail(sqlite_error(impl_->db, rc, "list configs", impl_->path));
  return out;
}

}  // namespace modelux
