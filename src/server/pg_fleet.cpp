// PostgreSQL connection wrapper and the per-database change hub (see pg_fleet.hpp).
#include "server/pg_fleet.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "modelux/scrub.hpp"

namespace modelux::pg {

bool is_postgres_url(std::string_view s) noexcept { return s.starts_with("postgres://") || s.starts_with("postgresql://"); }

namespace {

// A password in the URL is a secret: every output of the process scrubs it.
void register_password(const std::string& url) {
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), nullptr);
  if (!opts) return;
  for (PQconninfoOption* o = opts; o->keyword; ++o)
    if (std::string_view(o->keyword) == "password" && o->val && *o->val) add_secret(o->val);
  PQconninfoFree(opts);
}

}  // namespace

Error PgConn::error(std::string_view what) const {
  Error e;
  e.kind = ErrorKind::io;
  std::string why = conn_ ? PQerrorMessage(conn_) : "not connected";
  while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
  e.message = scrubbed("postgres: " + std::string(what) + ": " + why);
  return e;
}

Result<void> PgConn::ensure() {
  if (conn_ && PQstatus(conn_) == CONNECTION_OK) return {};
  close();
  register_password(url_);
  // Defaults first, the URL after them (it may override a timeout), our name last (so the
  // listener can be told apart). A dead peer is noticed by TCP keepalives within ~20 s.
  const char* keys[] = {"connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count", "dbname", "application_name", nullptr};
  const char* vals[] = {"3", "10", "5", "2", url_.c_str(), role_.c_str(), nullptr};
  conn_ = PQconnectdbParams(keys, vals, 1);
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
    Error e = error("cannot connect");
    close();
    return fail(std::move(e));
  }
  // Our own notices (CREATE ... IF NOT EXISTS "already exists") are not worth stderr.
  PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
  return {};
}

void PgConn::close() {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
}

Result<PgResult> PgConn::exec(std::string_view sql, const std::vector<Param>& params) {
  if (auto r = ensure(); !r) return fail(r.error());
  std::vector<const char*> vals;
  vals.reserve(params.size());
  for (const auto& p : params) vals.push_back(p ? p->c_str() : nullptr);
  std::string q(sql);
  // A connection the server dropped (a restart, a failover, an idle kill) is only noticed by
  // the next statement: outside a transaction, reconnect and run it once more.
  for (int attempt = 0;; ++attempt) {
    const bool idle = PQtransactionStatus(conn_) == PQTRANS_IDLE;
    PgResult res(PQexecParams(conn_, q.c_str(), static_cast<int>(vals.size()), nullptr, vals.data(), nullptr, nullptr, 0));
    ExecStatusType st = res.get() ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return res;
    Error e = error("query failed");
    if (res.get())
      if (const char* code = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE)) e.code = code;
    if (PQstatus(conn_) == CONNECTION_OK) return fail(std::move(e));
    close();
    if (!idle || attempt > 0) return fail(std::move(e));
    if (auto r = ensure(); !r) return fail(std::move(e));
  }
}

Result<void> PgConn::exec_script(std::string_view sql) {
  if (auto r = ensure(); !r) return fail(r.error());
  std::string q(sql);
  for (int attempt = 0;; ++attempt) {
    const bool idle = PQtransactionStatus(conn_) == PQTRANS_IDLE;
    PgResult res(PQexec(conn_, q.c_str()));
    ExecStatusType st = res.get() ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return {};
    Error e = error("statement failed");
    if (res.get())
      if (const char* code = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE)) e.code = code;
    if (PQstatus(conn_) == CONNECTION_OK) return fail(std::move(e));
    close();
    // Only a statement that opens nothing risky is run again: BEGIN, LISTEN, a read.
    if (!idle || attempt > 0 || q.starts_with("COMMIT")) return fail(std::move(e));
    if (auto r = ensure(); !r) return fail(std::move(e));
  }
}

void PgConn::rollback() {
  if (!conn_) return;
  if (PQstatus(conn_) != CONNECTION_OK) {
    close();
    return;
  }
  if (PQtransactionStatus(conn_) == PQTRANS_IDLE) return;
  PGresult* r = PQexec(conn_, "ROLLBACK");
  if (r) PQclear(r);
  if (PQstatus(conn_) != CONNECTION_OK) close();
}

Result<void> ensure_schema(PgConn& c, std::string_view schema_sql) {
  // One transaction under an advisory lock: instances starting together create the tables
  // one after another instead of failing on a duplicate type.
  if (auto r = c.exec_script("BEGIN; SELECT pg_advisory_xact_lock(7300815)"); !r) return r;
  std::string sql = std::string(schema_sql) +
                    "; CREATE TABLE IF NOT EXISTS modelux_changes (id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL);"
                    " INSERT INTO modelux_changes (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING";
  if (auto r = c.exec_script(sql); !r) {
    c.rollback();
    return r;
  }
  if (auto r = c.exec_script("COMMIT"); !r) {
    c.rollback();
    return r;
  }
  return {};
}

// ---- the hub ----------------------------------------------------------------------------------

std::shared_ptr<PgHub> PgHub::for_url(const std::string& url, Millis reconcile) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<PgHub>> hubs;
  std::lock_guard lk(mu);
  auto& w = hubs[url];
  if (auto h = w.lock()) {
    h->set_reconcile(reconcile);
    return h;
  }
  auto h = std::shared_ptr<PgHub>(new PgHub(url, reconcile));
  w = h;
  return h;
}

PgHub::PgHub(std::string url, Millis reconcile) : url_(std::move(url)), reconcile_ms_(reconcile.count()) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  thread_ = std::thread([this] { run(); });
}

PgHub::~PgHub() {
  stop_ = true;
  if (wake_fd_ >= 0) {
    std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void PgHub::set_reconcile(Millis every) {
  std::int64_t cur = reconcile_ms_.load();
  while (every.count() < cur && !reconcile_ms_.compare_exchange_weak(cur, every.count())) {
  }
}

void PgHub::bump() {
  counter_.fetch_add(1, std::memory_order_acq_rel);
  // Called under the lock: once unsubscribe() returns, its callback is not running and never
  // runs again (its owner may be destroyed next). Callbacks are short and never subscribe.
  std::lock_guard lk(subs_mu_);
  for (const auto& [id, cb] : subs_) cb();
}

std::uint64_t PgHub::subscribe(std::function<void()> cb) {
  std::lock_guard lk(subs_mu_);
  subs_.emplace_back(next_sub_, std::move(cb));
  return next_sub_++;
}

void PgHub::unsubscribe(std::uint64_t id) {
  std::lock_guard lk(subs_mu_);
  std::erase_if(subs_, [&](const auto& s) { return s.first == id; });
}

bool PgHub::wait_readable(int fd, int timeout_ms) {
  // The wake fd first: stop() interrupts any wait. fd < 0 (no connection) waits on it alone.
  pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {fd, POLLIN, 0}};
  int n = ::poll(fds, fd >= 0 ? 2 : 1, timeout_ms);
  return n > 0 && fd >= 0 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
}

bool PgHub::drain_notifications(PGconn* c) {
  bool heard = false;
  while (PGnotify* n = PQnotifies(c)) {
    heard = true;
    // The payload is the counter's value after that write: the periodic check then finds
    // nothing to heal for it (commits bump the row in commit order, so it only grows).
    if (n->extra && *n->extra) {
      char* end = nullptr;
      long long v = std::strtoll(n->extra, &end, 10);
      if (end && *end == '\0' && v > last_row_) last_row_ = v;
    }
    PQfreemem(n);
  }
  return heard;
}

// The periodic heal: the counter row moved without a notification reaching us (or `force`,
// after a reconnect, when anything may have been missed). false when the connection failed.
bool PgHub::check_counter(PgConn& c, bool force) {
  auto r = c.exec("SELECT n FROM modelux_changes WHERE id = 1");
  if (!r || r->rows() != 1) return false;
  std::int64_t n = r->i64(0, 0);
  bool moved = n != last_row_;
  if (moved && !force && last_row_ >= 0) healed_.fetch_add(1);
  last_row_ = n;
  if (moved || force) bump();
  return true;
}

void PgHub::run() {
  PgConn conn(url_, "modelux-listen");
  int backoff_ms = 100;
  auto next_check = std::chrono::steady_clock::now();
  while (!stop_.load()) {
    if (!listening_.load()) {
      auto ok = conn.exec_script(std::string("LISTEN ") + kChannel);
      if (!ok) {
        // PostgreSQL is down or unreachable: the stores keep their last snapshots; try again.
        conn.close();
        (void)wait_readable(-1, backoff_ms);
        backoff_ms = std::min(backoff_ms * 2, 2000);
        continue;
      }
      backoff_ms = 100;
      listening_ = true;
      // Anything written while we were not listening was not heard: reload once.
      if (!check_counter(conn, true)) {
        listening_ = false;
        conn.close();
        continue;
      }
      next_check = std::chrono::steady_clock::now() + Millis{reconcile_ms_.load()};
    }
    auto now = std::chrono::steady_clock::now();
    int timeout = static_cast<int>(std::max<std::int64_t>(0, std::chrono::duration_cast<Millis>(next_check - now).count()));
    bool readable = wait_readable(PQsocket(conn.raw()), timeout);
    if (stop_.load()) break;
    bool alive = true;
    if (readable) {
      if (PQconsumeInput(conn.raw()) == 0) alive = false;
      if (drain_notifications(conn.raw())) bump();
      if (PQstatus(conn.raw()) != CONNECTION_OK) alive = false;
    }
    if (alive && std::chrono::steady_clock::now() >= next_check) {
      alive = check_counter(conn, false);
      // Notifications read off the socket during the check: the socket will not wake us for them.
      if (alive && drain_notifications(conn.raw())) bump();
      next_check = std::chrono::steady_clock::now() + Millis{reconcile_ms_.load()};
    }
    if (!alive) {
      listening_ = false;
      conn.close();
    }
  }
}

}  // namespace modelux::pg
