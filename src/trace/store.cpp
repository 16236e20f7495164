// The SQLite trace store: schema, batch writes, lookups and filtered queries, retention and
// export. Analytics (spend, latency, errors, failovers, forecast) live in analytics.cpp.
//
// Layout: `traces` holds one row per request with the columns queries filter and aggregate on,
// plus the full DecisionTrace JSON in `body` (the one source of truth when a trace is read back).
// `trace_attempts` and `trace_tags` are narrow side tables so "spend by provider" or "tag
// env=prod" never parse JSON. The file runs in WAL mode so readers (the CLI, the admin API)
// never block the writer and the writer never blocks them.
//
// Indexes are chosen for the writer: every one is keyed so that a new trace lands at its end
// (time first, or a column with few values first), never in the middle. An index led by the end
// user (one entry per user spread over the whole B-tree) dirtied one page per trace, written
// twice (WAL, then checkpoint): with 1,000 users it was a third of the writer's CPU. So the user
// and the project are columns of the time index instead (`traces_timeline`, the only secondary
// index): a search by user or project reads that index over the query's time window, newest
// first, and reads table rows only for the traces that match. The side tables have no second
// index either: the timeline also carries the request id, so the attempts (or tags) of a time
// window are found by their primary key from the window's request ids (an attempt's time is its
// trace's), and a tag search probes the tags' primary key from each candidate trace.
#include <sys/stat.h>

#include <ostream>

#include "trace/store_impl.hpp"
#include "trace/trace_json_util.hpp"

namespace modelux {

using trace_detail::sqlite_error;
using trace_detail::Stmt;
using trace_detail::from_us;

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS traces(
  request_id TEXT NOT NULL UNIQUE,
  time_us INTEGER NOT NULL,
  config TEXT NOT NULL, config_version INTEGER NOT NULL, strategy TEXT NOT NULL,
  project TEXT NOT NULL, org TEXT NOT NULL, end_user TEXT NOT NULL,
  ok INTEGER NOT NULL, served_model TEXT NOT NULL, served_provider TEXT NOT NULL,
  error_kind TEXT NOT NULL, total_ns INTEGER NOT NULL, ttft_ns INTEGER NOT NULL,
  input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
  input_usd REAL NOT NULL, output_usd REAL NOT NULL,
  attempts INTEGER NOT NULL, failed_over INTEGER NOT NULL,
  body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS traces_timeline ON traces(time_us, end_user, project, request_id);
CREATE TABLE IF NOT EXISTS trace_attempts(
  request_id TEXT NOT NULL, idx INTEGER NOT NULL, time_us INTEGER NOT NULL,
  model TEXT NOT NULL, provider TEXT NOT NULL, ok INTEGER NOT NULL, outcome TEXT NOT NULL,
  status INTEGER NOT NULL, duration_ns INTEGER NOT NULL, ttft_ns INTEGER NOT NULL,
  input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
  input_usd REAL NOT NULL, output_usd REAL NOT NULL, error TEXT NOT NULL,
  PRIMARY KEY(request_id, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trace_tags(
  request_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, time_us INTEGER NOT NULL,
  PRIMARY KEY(request_id, key, value)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trace_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
)sql";

bool file_exists(const std::string& p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0;
}

std::int64_t to_us(WallTime t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

}  // namespace

WallTime trace_detail::from_us(std::int64_t us) {
  return WallTime{std::chrono::duration_cast<WallTime::duration>(std::chrono::microseconds{us})};
}
std::int64_t trace_detail::micros(WallTime t) { return to_us(t); }

// ---- Impl -------------------------------------------------------------------------------------

TraceStore::Impl::~Impl() {
  for (Stmt* s : {&ins_trace, &ins_attempt, &ins_tag, &del_trace, &del_attempts, &del_tags, &bump_meta})
    s->finalize();
  if (db) sqlite3_close_v2(db);
}

Result<void> TraceStore::Impl::exec(const char* sql, std::string_view what) {
  char* msg = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &msg);
  if (msg) sqlite3_free(msg);
  if (rc != SQLITE_OK) return fail(sqlite_error(db, rc, what, path));
  return {};
}

Result<Stmt> TraceStore::Impl::prepare(std::string_view sql) {
  Stmt s;
  int rc = s.prepare(db, sql);
  if (rc != SQLITE_OK) return fail(sqlite_error(db, rc, "prepare", path));
  return s;
}

Result<void> TraceStore::Impl::prepare_writes() {
  if (ins_trace) return {};
  struct {
    Stmt* s;
    const char* sql;
  } list[] = {
      {&ins_trace,
       "INSERT INTO traces(request_id,time_us,config,config_version,strategy,project,org,end_user,ok,"
       "served_model,served_provider,error_kind,total_ns,ttft_ns,input_tokens,output_tokens,input_usd,"
       "output_usd,attempts,failed_over,body,stream,api_key_id,est_input_tokens,max_tokens,downgraded) "
       "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
       "ON CONFLICT(request_id) DO NOTHING"},
      {&ins_attempt,
       "INSERT OR REPLACE INTO trace_attempts(request_id,idx,time_us,model,provider,ok,outcome,status,"
       "duration_ns,ttft_ns,input_tokens,output_tokens,input_usd,output_usd,error) "
       "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"},
      {&ins_tag, "INSERT OR IGNORE INTO trace_tags(request_id,key,value,time_us) VALUES(?,?,?,?)"},
      {&del_trace, "DELETE FROM traces WHERE request_id=?"},
      {&del_attempts, "DELETE FROM trace_attempts WHERE request_id=?"},
      {&del_tags, "DELETE FROM trace_tags WHERE request_id=?"},
      {&bump_meta,
       "INSERT INTO trace_meta(key,value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=value+excluded.value"},
  };
  for (auto& [s, sql] : list) {
    int rc = s->prepare(db, sql);
    if (rc != SQLITE_OK) return fail(sqlite_error(db, rc, "prepare", path));
  }
  return {};
}

namespace {

// Attempts with no cost of their own (an app that reports only the request's total) get the
// request's cost on the served attempt, so spend by model/provider still adds up.
struct AttemptCosts {
  std::vector<Cost> cost;
  std::vector<std::pair<std::int64_t, std::int64_t>> tokens;
};

AttemptCosts attempt_costs(const DecisionTrace& t) {
  AttemptCosts ac;
  double sum = 0;
  std::int64_t tok = 0;
  for (const auto& a : t.attempts) {
    ac.cost.push_back(a.cost);
    ac.tokens.emplace_back(a.usage.prompt_tokens, a.usage.completion_tokens);
    sum += a.cost.total();
    tok += a.usage.total();
  }
  if (t.attempts.empty()) return ac;
  std::size_t served = t.attempts.size() - 1;
  for (std::size_t i = 0; i < t.attempts.size(); ++i)
    if (t.attempts[i].ok && (t.served_model.empty() || t.attempts[i].model == t.served_model)) served = i;
  if (sum == 0 && t.cost.total() > 0) ac.cost[served] = t.cost;
  if (tok == 0 && !t.usage.empty()) ac.tokens[served] = {t.usage.prompt_tokens, t.usage.completion_tokens};
  return ac;
}

bool failed_over(const DecisionTrace& t) {
  bool seen_failure = false;
  for (const auto& a : t.attempts) {
    if (a.member >= 0) continue;  // ensemble members run side by side; not a failover
    if (seen_failure) return true;
    if (!a.ok) seen_failure = true;
  }
  return false;
}

bool was_downgraded(const DecisionTrace& t) {
  for (const auto& a : t.budget_actions)
    if (a.starts_with("downgrade to ")) return true;
  return false;
}

}  // namespace

Result<void> TraceStore::Impl::insert(const DecisionTrace& t) {
  const std::int64_t time_us = to_us(t.time);
  std::string& body = body_buf;
  body.clear();
  trace_detail::append_trace_json(body, t);
  AttemptCosts ac = attempt_costs(t);
  std::int64_t in_tok = 0, out_tok = 0;
  for (auto& [i, o] : ac.tokens) {
    in_tok += i;
    out_tok += o;
  }

  auto bind_trace = [&] {
    Stmt& s = ins_trace;
    s.reset();
    s.bind_static(1, t.request_id);
    s.bind(2, time_us);
    s.bind_static(3, t.config);
    s.bind(4, t.config_version);
    s.bind_static(5, t.strategy);
    s.bind_static(6, t.project);
    s.bind_static(7, t.org);
    s.bind_static(8, t.end_user);
    s.bind(9, t.ok);
    s.bind_static(10, t.served_model);
    s.bind_static(11, t.served_provider);
    s.bind_static(12, t.error_kind);
    s.bind(13, static_cast<std::int64_t>(t.total.count()));
    s.bind(14, static_cast<std::int64_t>(t.ttft.count()));
    s.bind(15, in_tok);
    s.bind(16, out_tok);
    s.bind(17, t.cost.input_usd);
    s.bind(18, t.cost.output_usd);
    s.bind(19, static_cast<std::int64_t>(t.attempts.size()));
    s.bind(20, failed_over(t));
    s.bind_static(21, body);
    s.bind(22, t.stream);
    s.bind_static(23, t.api_key_id);
    s.bind(24, t.est_input_tokens);
    s.bind(25, t.max_tokens);
    s.bind(26, was_downgraded(t));
  };
  bind_trace();
  int rc = ins_trace.step();
  if (rc != SQLITE_DONE) return fail(sqlite_error(db, rc, "insert trace", path));
  if (sqlite3_changes(db) == 0) {
    // Same request id again: the newest trace replaces the old one and its side rows.
    for (Stmt* d : {&del_attempts, &del_tags, &del_trace}) {
      d->reset();
      d->bind_static(1, t.request_id);
      rc = d->step();
      if (rc != SQLITE_DONE) return fail(sqlite_error(db, rc, "replace trace", path));
    }
    bind_trace();
    rc = ins_trace.step();
    if (rc != SQLITE_DONE) return fail(sqlite_error(db, rc, "insert trace", path));
  }
  for (std::size_t i = 0; i < t.attempts.size(); ++i) {
    const AttemptRecord& a = t.attempts[i];
    Stmt& s = ins_attempt;
    s.reset();
    s.bind_static(1, t.request_id);
    s.bind(2, static_cast<std::int64_t>(i));
    s.bind(3, time_us);
    s.bind_static(4, a.model);
    s.bind_static(5, a.provider);
    s.bind(6, a.ok);
    s.bind_static(7, a.outcome);
    s.bind(8, a.status);
    s.bind(9, static_cast<std::int64_t>(a.duration.count()));
    s.bind(10, static_cast<std::int64_t>(a.ttft.count()));
    s.bind(11, ac.tokens[i].first);
    s.bind(12, ac.tokens[i].second);
    s.bind(13, ac.cost[i].input_usd);
    s.bind(14, ac.cost[i].output_usd);
    s.bind_static(15, a.error);
    rc = s.step();
    if (rc != SQLITE_DONE) return fail(sqlite_error(db, rc, "insert attempt", path));
  }
  for (const auto& [k, v] : t.tags) {
    Stmt& s = ins_tag;
    s.reset();
    s.bind_static(1, t.request_id);
    s.bind_static(2, k);
    s.bind_static(3, v);
    s.bind(4, time_us);
    rc = s.step();
    if (rc != SQLITE_DONE) return fail(sqlite_error(db, rc, "insert tag", path));
  }
  return {};
}

Result<void> TraceStore::Impl::bump(const char* key, std::uint64_t delta) {
  if (delta == 0) return {};
  bump_meta.reset();
  bump_meta.bind_static(1, key);
  bump_meta.bind(2, static_cast<std::int64_t>(delta));
  int rc = bump_meta.step();
  if (rc != SQLITE_DONE) return fail(sqlite_error(db, rc, "update counters", path));
  return {};
}

Result<void> TraceStore::Impl::write_locked(const std::vector<DecisionTrace>& traces, std::uint64_t written,
                                            std::uint64_t dropped, std::uint64_t errors,
                                            std::optional<WallTime> now) {
  if (read_only) return fail(ErrorKind::io, "trace store '" + path + "' is open read-only");
  if (auto r = prepare_writes(); !r) return r;
  if (auto r = exec("BEGIN IMMEDIATE", "begin write"); !r) return r;
  auto body = [&]() -> Result<void> {
    for (const auto& t : traces)
      if (auto r = insert(t); !r) return r;
    if (auto r = bump("written", written); !r) return r;
    if (auto r = bump("dropped", dropped); !r) return r;
    if (auto r = bump("write_errors", errors); !r) return r;
    if (now) {
      Stmt s;
      if (s.prepare(db, "INSERT INTO trace_meta(key,value) VALUES('updated_us',?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value") != SQLITE_OK)
        return fail(sqlite_error(db, sqlite3_errcode(db), "update counters", path));
      s.bind(1, to_us(*now));
      int rc = s.step();
      if (rc != SQLITE_DONE) return fail(sqlite_error(db, rc, "update counters", path));
    }
    return {};
  }();
  if (!body) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return body;
  }
  if (auto r = exec("COMMIT", "commit"); !r) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return r;
  }
  return {};
}

// Builds "WHERE ..." for a TraceQuery over `traces t`, binding values in order.
std::string TraceStore::Impl::where_clause(const TraceQuery& q, std::vector<Bound>& binds) {
  std::string w = " WHERE 1=1";
  if (q.since) {
    w += " AND t.time_us >= ?";
    binds.emplace_back(to_us(*q.since));
  }
  if (q.until) {
    w += " AND t.time_us < ?";
    binds.emplace_back(to_us(*q.until));
  }
  auto eq = [&](const std::string& v, const char* col) {
    if (v.empty()) return;
    w += std::string(" AND t.") + col + " = ?";
    binds.emplace_back(v);
  };
  eq(q.project, "project");
  eq(q.end_user, "end_user");
  eq(q.config, "config");
  if (q.ok) {
    w += " AND t.ok = ?";
    binds.emplace_back(static_cast<std::int64_t>(*q.ok ? 1 : 0));
  }
  if (!q.model.empty()) {
    w += " AND EXISTS(SELECT 1 FROM trace_attempts a WHERE a.request_id=t.request_id AND a.model=?)";
    binds.emplace_back(q.model);
  }
  if (!q.provider.empty()) {
    w += " AND EXISTS(SELECT 1 FROM trace_attempts a WHERE a.request_id=t.request_id AND a.provider=?)";
    binds.emplace_back(q.provider);
  }
  for (const auto& [k, v] : q.tags) {
    w += " AND EXISTS(SELECT 1 FROM trace_tags g WHERE g.request_id=t.request_id AND g.key=? AND g.value=?)";
    binds.emplace_back(k);
    binds.emplace_back(v);
  }
  if (q.after) {  // keyset pagination: strictly past (time_us, request_id) in the query's order
    w += q.newest_first ? " AND (t.time_us < ? OR (t.time_us = ? AND t.request_id < ?))"
                        : " AND (t.time_us > ? OR (t.time_us = ? AND t.request_id > ?))";
    binds.emplace_back(q.after->first);
    binds.emplace_back(q.after->first);
    binds.emplace_back(q.after->second);
  }
  return w;
}

void TraceStore::Impl::bind_all(Stmt& s, const std::vector<Bound>& binds, int first) {
  int i = first;
  for (const auto& b : binds) {
    if (auto* p = std::get_if<std::int64_t>(&b)) s.bind(i++, *p);
    else if (auto* d = std::get_if<double>(&b)) s.bind(i++, *d);
    else s.bind(i++, std::string_view(std::get<std::string>(b)));
  }
}

Result<std::uint64_t> TraceStore::Impl::for_each(const TraceQuery& q,
                                                 const std::function<void(DecisionTrace&&)>& fn) {
  std::vector<Bound> binds;
  // Keyset pages order by the request id within one microsecond: a replaced trace keeps its
  // id but not its rowid, so rowid order could move it across a page boundary.
  const char* order = q.keyset ? (q.newest_first ? " ORDER BY t.time_us DESC, t.request_id DESC" : " ORDER BY t.time_us, t.request_id")
                               : (q.newest_first ? " ORDER BY t.time_us DESC, t.rowid DESC" : " ORDER BY t.time_us, t.rowid");
  std::string sql = "SELECT t.request_id, t.body FROM traces t" + where_clause(q, binds) + order;
  if (q.limit > 0) sql += " LIMIT " + std::to_string(q.limit);
  auto s = prepare(sql);
  if (!s) return fail(s.error());
  bind_all(*s, binds);
  std::uint64_t n = 0;
  int rc;
  while ((rc = s->step()) == SQLITE_ROW) {
    auto parsed = parse_json_body(s->text(0), s->text(1));
    if (!parsed) return fail(parsed.error());
    fn(std::move(*parsed));
    ++n;
  }
  if (rc != SQLITE_DONE) return fail(sqlite_error(db, rc, "query traces", path));
  return n;
}

Result<DecisionTrace> TraceStore::Impl::parse_json_body(std::string_view id, std::string_view body) {
  Json j = Json::parse(body, nullptr, false);
  if (j.is_discarded()) {
    return fail(ErrorKind::io, "trace store '" + path + "': stored trace " + std::string(id) +
                                   " is not valid JSON (the file was modified outside modelux)");
  }
  auto t = DecisionTrace::from_json(j);
  if (!t) {
    Error e = t.error();
    e.kind = ErrorKind::io;
    e.message = "trace store '" + path + "': stored trace " + std::string(id) + " is malformed: " + e.message;
    return fail(std::move(e));
  }
  return t;
}

// ---- TraceStore -------------------------------------------------------------------------------

TraceStore::TraceStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TraceStore::~TraceStore() = default;
const std::string& TraceStore::path() const noexcept { return impl_->path; }

Result<std::shared_ptr<TraceStore>> TraceStore::open(const std::string& path, Mode mode, Millis busy_timeout) {
  auto impl = std::make_unique<Impl>();
  const bool memory = path.empty() || path == ":memory:";
  impl->path = memory ? ":memory:" : path;
  impl->read_only = mode == Mode::read_only;
  if (memory && impl->read_only)
    return fail(ErrorKind::io, "an in-memory trace store cannot be opened read-only (use the Tracer's store())");
  if (impl->read_only && !file_exists(path))
    return fail(ErrorKind::io, "no trace store at '" + path + "' (nothing has been traced there yet)");

  int flags = impl->read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  flags |= SQLITE_OPEN_NOMUTEX;  // the Impl mutex serializes every call
  int rc = sqlite3_open_v2(impl->path.c_str(), &impl->db, flags, nullptr);
  if (rc != SQLITE_OK) return fail(sqlite_error(impl->db, rc, "open", impl->path));
  sqlite3_extended_result_codes(impl->db, 0);
  sqlite3_busy_timeout(impl->db, static_cast<int>(busy_timeout.count()));

  // Reading the schema forces SQLite to read the header: garbage bytes fail here, clearly.
  if (auto r = impl->exec("SELECT count(*) FROM sqlite_master", "read schema"); !r) return fail(r.error());
  if (!impl->read_only) {
    if (!memory) {
      // New files get 8 KB pages (SQLite's default is 4 KB): half the pages, B-tree splits and
      // per-page kernel work for the same traces (bench_trace: writer CPU per trace -15%). It
      // only applies before the first write, so an existing file keeps its page size.
      if (auto r = impl->exec("PRAGMA page_size=8192", "configure"); !r) return fail(r.error());
      if (auto r = impl->exec("PRAGMA journal_mode=WAL", "switch to WAL"); !r) return fail(r.error());
      if (auto r = impl->exec("PRAGMA synchronous=NORMAL", "configure"); !r) return fail(r.error());
      // An 8 MB page cache (SQLite's default is 2 MB) keeps the pages the writer touches
      // (interior pages and the B-trees' right edges) from being read back with pread; a 32 MB
      // WAL checkpoint interval (default 4 MB) copies a page that several batches dirtied into
      // the file once. bench_trace (schema 2): writer CPU per trace -20%, bytes read -75%.
      if (auto r = impl->exec("PRAGMA cache_size=-8192; PRAGMA wal_autocheckpoint=8192", "configure"); !r)
        return fail(r.error());
    }
    if (auto r = impl->exec("BEGIN IMMEDIATE", "create schema"); !r) return fail(r.error());
    if (auto r = impl->exec(kSchema, "create schema"); !r) {
      sqlite3_exec(impl->db, "ROLLBACK", nullptr, nullptr, nullptr);
      return fail(r.error());
    }
    if (auto r = impl->migrate(); !r) {
      sqlite3_exec(impl->db, "ROLLBACK", nullptr, nullptr, nullptr);
      return fail(r.error());
    }
    if (auto r = impl->exec("COMMIT", "create schema"); !r) {
      sqlite3_exec(impl->db, "ROLLBACK", nullptr, nullptr, nullptr);
      return fail(r.error());
    }
  } else {
    auto s = impl->prepare("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='traces'");
    if (!s) return fail(s.error());
    rc = s->step();
    if (rc != SQLITE_ROW) return fail(sqlite_error(impl->db, rc, "read schema", impl->path));
    if (s->i64(0) == 0)
      return fail(ErrorKind::io, "'" + path + "' is a SQLite database but not a modelux trace store (no traces table)");
  }
  return std::shared_ptr<TraceStore>(new TraceStore(std::move(impl)));
}

Result<void> TraceStore::write(const std::vector<DecisionTrace>& traces) {
  std::lock_guard lock(impl_->mu);
  return impl_->write_locked(traces, 0, 0, 0, std::nullopt);
}

Result<void> TraceStore::write_batch(const std::vector<DecisionTrace>& traces, std::uint64_t written_delta,
                                     std::uint64_t dropped_delta, std::uint64_t write_errors_delta, WallTime now) {
  std::lock_guard lock(impl_->mu);
  return impl_->write_locked(traces, written_delta, dropped_delta, write_errors_delta, now);
}

std::size_t TraceStore::cache_bytes() const noexcept {
  std::lock_guard lock(impl_->mu);
  int cur = 0, hi = 0;
  if (sqlite3_db_status(impl_->db, SQLITE_DBSTATUS_CACHE_USED, &cur, &hi, 0) != SQLITE_OK) return 0;
  return static_cast<std::size_t>(std::max(cur, 0));
}

// A burst of traces fills the page cache up to its cache_size; an idle store reads and writes
// nothing, so the pages only pin heap. The next batch reads back the few it needs.
std::size_t TraceStore::release_memory() noexcept {
  std::lock_guard lock(impl_->mu);
  int before = 0, after = 0, hi = 0;
  sqlite3_db_status(impl_->db, SQLITE_DBSTATUS_CACHE_USED, &before, &hi, 0);
  sqlite3_db_release_memory(impl_->db);
  sqlite3_db_status(impl_->db, SQLITE_DBSTATUS_CACHE_USED, &after, &hi, 0);
  std::string().swap(impl_->body_buf);
  return before > after ? static_cast<std::size_t>(before - after) : 0;
}

Result<void> TraceStore::add_counters(std::uint64_t written_delta, std::uint64_t dropped_delta,
                                      std::uint64_t write_errors_delta, WallTime now) {
  std::lock_guard lock(impl_->mu);
  return impl_->write_locked({}, written_delta, dropped_delta, write_errors_delta, now);
}

Result<std::optional<DecisionTrace>> TraceStore::get(const std::string& request_id) {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->prepare("SELECT body FROM traces WHERE request_id=?");
  if (!s) return fail(s.error());
  s->bind(1, std::string_view(request_id));
  int rc = s->step();
  if (rc == SQLITE_DONE) return std::optional<DecisionTrace>{};
  if (rc != SQLITE_ROW) return fail(sqlite_error(impl_->db, rc, "read trace", impl_->path));
  auto t = impl_->parse_json_body(request_id, s->text(0));
  if (!t) return fail(t.error());
  return std::optional<DecisionTrace>(std::move(*t));
}

Result<std::vector<DecisionTrace>> TraceStore::query(const TraceQuery& q) {
  std::lock_guard lock(impl_->mu);
  std::vector<DecisionTrace> out;
  auto r = impl_->for_each(q, [&](DecisionTrace&& t) { out.push_back(std::move(t)); });
  if (!r) return fail(r.error());
  return out;
}

Result<std::uint64_t> TraceStore::count(const TraceQuery& q) {
  std::lock_guard lock(impl_->mu);
  std::vector<Impl::Bound> binds;
  auto s = impl_->prepare("SELECT count(*) FROM traces t" + impl_->where_clause(q, binds));
  if (!s) return fail(s.error());
  impl_->bind_all(*s, binds);
  int rc = s->step();
  if (rc != SQLITE_ROW) return fail(sqlite_error(impl_->db, rc, "count traces", impl_->path));
  return static_cast<std::uint64_t>(s->i64(0));
}

Result<std::uint64_t> TraceStore::apply_retention(int days, WallTime now) {
  if (days <= 0) return std::uint64_t{0};
  std::lock_guard lock(impl_->mu);
  if (impl_->read_only) return fail(ErrorKind::io, "trace store '" + impl_->path + "' is open read-only");
  const std::int64_t cutoff = to_us(now - std::chrono::hours{24} * days);
  if (auto r = impl_->exec("BEGIN IMMEDIATE", "apply retention"); !r) return fail(r.error());
  std::uint64_t deleted = 0;
  const char* sqls[] = {
      // The side rows go first, found through the traces they belong to (primary-key seeks).
      "DELETE FROM trace_tags WHERE request_id IN (SELECT request_id FROM traces WHERE time_us < ?1)",
      "DELETE FROM trace_attempts WHERE request_id IN (SELECT request_id FROM traces WHERE time_us < ?1)",
      "DELETE FROM traces WHERE time_us < ?",
  };
  for (const char* sql : sqls) {
    auto s = impl_->prepare(sql);
    int rc = s ? (s->bind(1, cutoff), s->step()) : SQLITE_ERROR;
    if (rc != SQLITE_DONE) {
      Error e = s ? sqlite_error(impl_->db, rc, "apply retention", impl_->path) : s.error();
      sqlite3_exec(impl_->db, "ROLLBACK", nullptr, nullptr, nullptr);
      return fail(std::move(e));
    }
    deleted = static_cast<std::uint64_t>(sqlite3_changes(impl_->db));  // the last one: traces
  }
  if (auto r = impl_->exec("COMMIT", "apply retention"); !r) {
    sqlite3_exec(impl_->db, "ROLLBACK", nullptr, nullptr, nullptr);
    return fail(r.error());
  }
  return deleted;
}

Result<std::uint64_t> TraceStore::export_jsonl(const TraceQuery& q, std::ostream& out) {
  std::lock_guard lock(impl_->mu);
  return impl_->for_each(q, [&](DecisionTrace&& t) { out << t.to_json().dump() << '\n'; });
}

namespace {
std::string csv_field(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string o = "\"";
  for (char c : s) {
    if (c == '"') o += '"';
    o += c;
  }
  o += '"';
  return o;
}
std::string num(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.10g", v);
  return b;
}
}  // namespace

Result<std::uint64_t> TraceStore::export_csv(const TraceQuery& q, std::ostream& out) {
  std::lock_guard lock(impl_->mu);
  out << "request_id,time,config,config_version,strategy,project,org,end_user,tags,ok,served_model,"
         "served_provider,attempts,error_kind,total_ms,ttft_ms,prompt_tokens,completion_tokens,cached_tokens,"
         "input_usd,output_usd,total_usd,decision,reason\n";
  return impl_->for_each(q, [&](DecisionTrace&& t) {
    std::string tags;
    for (const auto& [k, v] : t.tags) {
      if (!tags.empty()) tags += ';';
      tags += k + "=" + v;
    }
    std::string row;
    auto add = [&](std::string_view f) {
      row += csv_field(f);
      row += ',';
    };
    add(t.request_id);
    add(trace_detail::format_iso_time(t.time));
    add(t.config);
    add(std::to_string(t.config_version));
    add(t.strategy);
    add(t.project);
    add(t.org);
    add(t.end_user);
    add(tags);
    add(t.ok ? "true" : "false");
    add(t.served_model);
    add(t.served_provider);
    add(std::to_string(t.attempts.size()));
    add(t.error_kind);
    add(num(static_cast<double>(t.total.count()) / 1e6));
    add(num(static_cast<double>(t.ttft.count()) / 1e6));
    add(std::to_string(t.usage.prompt_tokens));
    add(std::to_string(t.usage.completion_tokens));
    add(std::to_string(t.usage.cached_tokens));
    add(num(t.cost.input_usd));
    add(num(t.cost.output_usd));
    add(num(t.cost.total()));
    add(t.decision);
    row += csv_field(t.reason);
    row += '\n';
    out << row;
  });
}

Result<TraceCounters> TraceStore::counters() {
  std::lock_guard lock(impl_->mu);
  TraceCounters c;
  auto s = impl_->prepare("SELECT key, value FROM trace_meta");
  if (!s) return fail(s.error());
  int rc;
  while ((rc = s->step()) == SQLITE_ROW) {
    std::string_view k = s->text(0);
    auto v = s->i64(1);
    if (k == "written") c.written = static_cast<std::uint64_t>(v);
    else if (k == "dropped") c.dropped = static_cast<std::uint64_t>(v);
    else if (k == "write_errors") c.write_errors = static_cast<std::uint64_t>(v);
    else if (k == "updated_us") c.updated = from_us(v);
  }
  if (rc != SQLITE_DONE) return fail(sqlite_error(impl_->db, rc, "read counters", impl_->path));
  auto n = impl_->prepare("SELECT count(*) FROM traces");
  if (!n) return fail(n.error());
  rc = n->step();
  if (rc != SQLITE_ROW) return fail(sqlite_error(impl_->db, rc, "count traces", impl_->path));
  c.stored = static_cast<std::uint64_t>(n->i64(0));
  return c;
}

}  // namespace modelux
