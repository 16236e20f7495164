// SQLite persistence of settled spend, off the hot path.
//
// One row per (instance, budget, scope value, period): absolute totals, upserted by flush()
// (the background thread calls it every sync_interval, and the destructor once more). On
// start the rows of the live windows are loaded back, so budgets survive restarts. Absolute
// totals make a flush idempotent: a crash between flushes loses at most one interval.
#include <sqlite3.h>

#include <algorithm>
#include <atomic>

#include "budget/manager_impl.hpp"

namespace modelux {

namespace {

Error sql_error(sqlite3* db, const std::string& what) {
  Error e;
  e.kind = ErrorKind::io;
  e.message = "budget store: " + what + ": " + (db ? sqlite3_errmsg(db) : "out of memory");
  return e;
}

struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

std::string instance_of(const BudgetOptions& o) { return o.instance_id.empty() ? "local" : o.instance_id; }

}  // namespace

Result<void> BudgetManager::Impl::open_store() {
  if (sqlite3_open_v2(options.sqlite_path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    Error e = sql_error(db, "cannot open '" + options.sqlite_path + "'");
    close_store();
    return fail(std::move(e));
  }
  sqlite3_busy_timeout(db, 5000);
  const char* ddl =
      "PRAGMA journal_mode=WAL;"
      "PRAGMA synchronous=NORMAL;"
      "CREATE TABLE IF NOT EXISTS budget_spend ("
      "  instance TEXT NOT NULL, budget TEXT NOT NULL, scope TEXT NOT NULL, period_start_ms INTEGER NOT NULL,"
      "  nusd INTEGER NOT NULL, tokens INTEGER NOT NULL, requests INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
      "  PRIMARY KEY (instance, budget, scope, period_start_ms));";
  char* err = nullptr;
  if (sqlite3_exec(db, ddl, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "unknown";
    sqlite3_free(err);
    close_store();
    return fail(ErrorKind::io, "budget store: cannot create schema in '" + options.sqlite_path + "': " + m);
  }
  // The reader used by ledger_for() on a wildcard value's first request (WAL: it never
  // blocks the writer, and it has its own lock so a request never waits for a flush).
  if (sqlite3_open_v2(options.sqlite_path.c_str(), &rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, nullptr) !=
          SQLITE_OK ||
      sqlite3_prepare_v2(rdb,
                         "SELECT period_start_ms, nusd, tokens, requests FROM budget_spend "
                         "WHERE instance = ?1 AND budget = ?2 AND scope = ?3 AND period_start_ms >= ?4",
                         -1, &load_stmt, nullptr) != SQLITE_OK) {
    Error e = sql_error(rdb, "cannot open a reader on '" + options.sqlite_path + "'");
    close_store();
    return fail(std::move(e));
  }
  sqlite3_busy_timeout(rdb, 5000);
  return {};
}

void BudgetManager::Impl::close_store() noexcept {
  if (load_stmt) sqlite3_finalize(load_stmt);
  load_stmt = nullptr;
  if (rdb) sqlite3_close_v2(rdb);
  rdb = nullptr;
  if (db) sqlite3_close_v2(db);
  db = nullptr;
}

void BudgetManager::Impl::apply_stored(BudgetLedger& l, const StoredRow& row, Instant now, WallTime wall) {
  if (!l.rolled_once || now >= l.period_end) l.roll(now, wall);
  const BudgetEntry& e = l.entry();
  const BudgetTotals& t = row.totals;
  if (e.spec.window != BudgetWindowKind::rolling) {
    if (l.periods.empty() || l.periods.back().start_ms != row.start_ms) return;  // an old window
    l.periods.back().own += t;
    l.own_sum += t;
    return;
  }
  const std::int64_t wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count();
  const std::int64_t w = e.bucket_ms;
  const std::int64_t b = row.start_ms - ((row.start_ms % w) + w) % w;
  if (b + w <= wall_ms - e.spec.window_s * 1000 || b > l.periods.back().start_ms) return;
  auto pos = std::lower_bound(l.periods.begin(), l.periods.end(), b,
                              [](const BudgetPeriod& p, std::int64_t v) { return p.start_ms < v; });
  if (pos == l.periods.end() || pos->start_ms != b) pos = l.periods.insert(pos, BudgetPeriod{b, {}, {}});
  pos->own += t;
  l.own_sum += t;
}

bool BudgetManager::Impl::load_rows(const BudgetSlot& slot, std::string_view value, Instant now,
                                    std::vector<StoredRow>& out) {
  if (!rdb) return false;
  const std::int64_t wall_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(wall_of(now).time_since_epoch()).count();
  std::int64_t span_ms = 0;
  switch (slot.entry().spec.window) {
    case BudgetWindowKind::daily: span_ms = 2 * 86'400'000LL; break;
    case BudgetWindowKind::weekly: span_ms = 8 * 86'400'000LL; break;
    case BudgetWindowKind::monthly: span_ms = 32 * 86'400'000LL; break;
    case BudgetWindowKind::rolling: span_ms = slot.entry().spec.window_s * 1000 + 2 * slot.entry().bucket_ms; break;
  }
  const std::string inst = instance_of(options);
  const std::string& name = slot.entry().spec.name;
  std::lock_guard lk(load_mu);
  sqlite3_reset(load_stmt);
  sqlite3_bind_text(load_stmt, 1, inst.c_str(), static_cast<int>(inst.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(load_stmt, 2, name.c_str(), static_cast<int>(name.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(load_stmt, 3, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
  sqlite3_bind_int64(load_stmt, 4, wall_ms - span_ms);
  int rc;
  while ((rc = sqlite3_step(load_stmt)) == SQLITE_ROW)
    out.push_back(StoredRow{sqlite3_column_int64(load_stmt, 0),
                            {sqlite3_column_int64(load_stmt, 1), sqlite3_column_int64(load_stmt, 2),
                             sqlite3_column_int64(load_stmt, 3)}});
  if (rc != SQLITE_DONE) {
    // A read error must not reset the user's spend silently: log it (rarely) and report what
    // was read; the row is retried on the value's next first use.
    static std::atomic<int> logged{0};
    if (logged.fetch_add(1, std::memory_order_relaxed) < 5) log(sql_error(rdb, "load of one scope value").message);
  }
  sqlite3_reset(load_stmt);
  return true;
}

Result<void> BudgetManager::Impl::load_store(Instant now) {
  Stmt q;
  if (sqlite3_prepare_v2(db,
                         "SELECT budget, scope, period_start_ms, nusd, tokens, requests FROM budget_spend "
                         "WHERE instance = ?1",
                         -1, &q.s, nullptr) != SQLITE_OK)
    return fail(sql_error(db, "prepare load"));
  const std::string inst = instance_of(options);
  sqlite3_bind_text(q.s, 1, inst.c_str(), static_cast<int>(inst.size()), SQLITE_TRANSIENT);
  const WallTime wall = wall_of(now);
  int rc;
  while ((rc = sqlite3_step(q.s)) == SQLITE_ROW) {
    const std::string budget = reinterpret_cast<const char*>(sqlite3_column_text(q.s, 0));
    const std::string scope = reinterpret_cast<const char*>(sqlite3_column_text(q.s, 1));
    const std::int64_t start = sqlite3_column_int64(q.s, 2);
    const BudgetTotals t{sqlite3_column_int64(q.s, 3), sqlite3_column_int64(q.s, 4), sqlite3_column_int64(q.s, 5)};
    const SlotList& slots = live_slots();
    auto it = std::find_if(slots.begin(), slots.end(), [&](const auto& s) { return s->entry().spec.name == budget; });
    if (it == slots.end()) continue;  // budget removed from the config
    BudgetSlot& slot = **it;
    BudgetLedger* l = nullptr;
    if (slot.wildcard()) {
      // Single-threaded (create): no other thread sees the slot yet.
      if (auto f = slot.per_value.find(scope); f != slot.per_value.end()) {
        l = f->second.get();
      } else {
        if (wildcard_live.load(std::memory_order_relaxed) >= options.max_wildcard_ledgers)
          continue;  // above the bound: this value's rows are read on its first request
        // Only values with spend in a live window get a ledger now (a row of an old window
        // would just create an idle ledger).
        BudgetLedger probe(slot.entry(), scope, true);
        apply_stored(probe, StoredRow{start, t}, now, wall);
        if (probe.own_sum == BudgetTotals{}) continue;
        auto& p = slot.per_value[scope];
        p = std::make_unique<BudgetLedger>(slot.entry(), scope, true);
        wildcard_live.fetch_add(1, std::memory_order_relaxed);
        all_ledgers.push_back(p.get());
        l = p.get();
      }
    } else if (slot.single->scope_value == scope) {
      l = slot.single.get();
    }
    if (!l) continue;  // the budget's scope changed
    std::lock_guard lk(l->mu);
    apply_stored(*l, StoredRow{start, t}, now, wall);
  }
  if (rc != SQLITE_DONE) return fail(sql_error(db, "load"));
  return {};
}

Result<void> BudgetManager::Impl::flush_store() {
  std::lock_guard io(io_mu);
  if (!db) return {};
  struct Row {
    BudgetLedger* ledger;
    std::uint64_t version;
    std::vector<BudgetPeriod> periods;
  };
  std::vector<Row> rows;
  for (BudgetLedger* l : ledgers()) {
    std::lock_guard lk(l->mu);
    if (l->version == l->flushed_version) continue;
    rows.push_back(Row{l, l->version, {l->periods.begin(), l->periods.end()}});
  }
  if (rows.empty()) return {};
  const std::string inst = instance_of(options);
  const std::int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock.wall_now().time_since_epoch()).count();
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(sql_error(db, "begin"));
  Stmt up;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO budget_spend (instance, budget, scope, period_start_ms, nusd, tokens, requests, "
                         "updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
                         "ON CONFLICT (instance, budget, scope, period_start_ms) DO UPDATE SET "
                         "nusd = excluded.nusd, tokens = excluded.tokens, requests = excluded.requests, "
                         "updated_ms = excluded.updated_ms",
                         -1, &up.s, nullptr) != SQLITE_OK) {
    Error e = sql_error(db, "prepare upsert");
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return fail(std::move(e));
  }
  for (const Row& r : rows) {
    for (const BudgetPeriod& p : r.periods) {
      if (p.own == BudgetTotals{}) continue;
      sqlite3_reset(up.s);
      sqlite3_bind_text(up.s, 1, inst.c_str(), static_cast<int>(inst.size()), SQLITE_STATIC);
      const std::string& name = r.ledger->entry().spec.name;
      sqlite3_bind_text(up.s, 2, name.c_str(), static_cast<int>(name.size()), SQLITE_STATIC);
      sqlite3_bind_text(up.s, 3, r.ledger->scope_value.c_str(), static_cast<int>(r.ledger->scope_value.size()),
                        SQLITE_STATIC);
      sqlite3_bind_int64(up.s, 4, p.start_ms);
      sqlite3_bind_int64(up.s, 5, p.own.nusd);
      sqlite3_bind_int64(up.s, 6, p.own.tokens);
      sqlite3_bind_int64(up.s, 7, p.own.requests);
      sqlite3_bind_int64(up.s, 8, now_ms);
      if (sqlite3_step(up.s) != SQLITE_DONE) {
        Error e = sql_error(db, "upsert");
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        return fail(std::move(e));
      }
    }
  }
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    Error e = sql_error(db, "commit");
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return fail(std::move(e));
  }
  for (const Row& r : rows) {
    std::lock_guard lk(r.ledger->mu);
    r.ledger->flushed_version = std::max(r.ledger->flushed_version, r.version);
  }
  // Prune periods no window can reach any more (the longest window is 400 days), hourly.
  if (now_ms - last_prune_ms >= 3'600'000) {
    last_prune_ms = now_ms;
    Stmt del;
    if (sqlite3_prepare_v2(db, "DELETE FROM budget_spend WHERE instance = ?1 AND period_start_ms < ?2", -1, &del.s,
                           nullptr) == SQLITE_OK) {
      sqlite3_bind_text(del.s, 1, inst.c_str(), static_cast<int>(inst.size()), SQLITE_STATIC);
      sqlite3_bind_int64(del.s, 2, now_ms - 401LL * 86'400'000);
      if (sqlite3_step(del.s) != SQLITE_DONE) return fail(sql_error(db, "prune"));
    }
  }
  return {};
}

Result<void> BudgetManager::Impl::delete_stored(const std::string& name) {
  if (!db) return {};
  const std::string inst = instance_of(options);
  Stmt del;
  if (sqlite3_prepare_v2(db, "DELETE FROM budget_spend WHERE instance = ?1 AND budget = ?2", -1, &del.s, nullptr) != SQLITE_OK)
    return fail(sql_error(db, "prepare reset"));
  sqlite3_bind_text(del.s, 1, inst.c_str(), static_cast<int>(inst.size()), SQLITE_STATIC);
  sqlite3_bind_text(del.s, 2, name.c_str(), static_cast<int>(name.size()), SQLITE_STATIC);
  if (sqlite3_step(del.s) != SQLITE_DONE) return fail(sql_error(db, "reset"));
  return {};
}

}  // namespace modelux
