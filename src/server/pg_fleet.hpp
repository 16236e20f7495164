// PostgreSQL plumbing shared by the fleet backends (the control store and the key store):
// one connection wrapper with parameterised queries, and the per-database change hub, whose
// listener thread turns LISTEN/NOTIFY plus a periodic counter check into a local change
// counter that readers poll for free.
//
// Why a hub: every write of any instance bumps one counter row and sends NOTIFY
// modelux_control in its transaction. Each process keeps ONE listener connection per database
// on its own thread (never an io thread); a notification, a counter row that moved (the
// periodic reconcile heals missed notifications: a dropped listener, a NOTIFY lost to a
// restart), or a reconnect bumps the hub's atomic counter and calls the subscribers. Readers
// (the KeyRegistry on every request, the control plane's loop) compare that atomic with what
// they last saw: no round trip to the database on the hot path, and nothing at all while
// PostgreSQL is down (the last loaded snapshots keep serving).
//
// Threading: PgConn is NOT thread-safe (its owner holds a mutex around it). PgHub is
// thread-safe; subscribers are called on the listener thread and must not block.
#pragma once

#include <libpq-fe.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "modelux/core.hpp"

namespace modelux::pg {

/// True for "postgres://…" and "postgresql://…" (what selects the PostgreSQL backends).
bool is_postgres_url(std::string_view s) noexcept;

/// The NOTIFY channel every write signals.
inline constexpr const char* kChannel = "modelux_control";

/// One query result that frees itself.
class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(PGresult* r) : r_(r) {}
  PgResult(PgResult&& o) noexcept : r_(std::exchange(o.r_, nullptr)) {}
  PgResult& operator=(PgResult&& o) noexcept {
    if (this != &o) {
      if (r_) PQclear(r_);
      r_ = std::exchange(o.r_, nullptr);
    }
    return *this;
  }
  ~PgResult() {
    if (r_) PQclear(r_);
  }
  PGresult* get() const { return r_; }
  int rows() const { return r_ ? PQntuples(r_) : 0; }
  bool null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
  std::string text(int row, int col) const { return std::string(PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col))); }
  std::int64_t i64(int row, int col) const { return std::stoll(PQgetvalue(r_, row, col)); }
  /// Rows changed by an UPDATE / INSERT / DELETE.
  std::int64_t affected() const {
    const char* n = r_ ? PQcmdTuples(r_) : "";
    return *n ? std::stoll(n) : 0;
  }

 private:
  PGresult* r_ = nullptr;
};

/// A query parameter: text, or SQL NULL.
using Param = std::optional<std::string>;

/// One connection to the database (reconnects lazily after a failure).
class PgConn {
 public:
  /// `role` goes into application_name ("modelux", "modelux-listen") so an operator (or a test)
  /// can find the connection in pg_stat_activity.
  PgConn(std::string url, std::string role) : url_(std::move(url)), role_(std::move(role)) {}
  ~PgConn() { close(); }
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  /// Connects if there is no healthy connection. Error (kind io) naming why.
  Result<void> ensure();
  void close();
  PGconn* raw() { return conn_; }
  /// Runs one statement with text parameters ($1, $2, …). Error for anything but a command or
  /// rows; the error's `code` is the SQLSTATE ("40001", "23505", …).
  Result<PgResult> exec(std::string_view sql, const std::vector<Param>& params = {});
  /// Runs several statements without parameters (schema, BEGIN/COMMIT).
  Result<void> exec_script(std::string_view sql);
  /// ROLLBACK when a transaction is open; never fails (a lost connection is closed).
  void rollback();
  Error error(std::string_view what) const;

 private:
  std::string url_, role_;
  PGconn* conn_ = nullptr;
};

/// The change hub of one database: see the file comment.
class PgHub {
 public:
  /// The process's hub for `url` (created on first use; shared by every store on that url).
  /// `reconcile` is how often the counter row is compared (the heal for missed notifications).
  static std::shared_ptr<PgHub> for_url(const std::string& url, Millis reconcile = Millis{2000});
  ~PgHub();

  /// Changes whenever any instance wrote (as far as this process has heard). Lock-free.
  std::uint64_t counter() const noexcept { return counter_.load(std::memory_order_acquire); }
  /// This process wrote: bump at once (its own listener hears the NOTIFY a moment later too).
  void bump();
  /// `cb` is called after each change (on the listener thread, or on the writer's thread for
  /// this process's own writes); it must be short and must not (un)subscribe. Returns a handle
  /// for unsubscribe(), after which `cb` is never running.
  std::uint64_t subscribe(std::function<void()> cb);
  void unsubscribe(std::uint64_t id);
  /// Shortens or lengthens the counter check (the smallest asked for wins).
  void set_reconcile(Millis every);
  /// Whether the listener connection is up (for /readyz-like reporting and tests).
  bool listening() const noexcept { return listening_.load(); }
  /// How many times a changed counter row was found by the periodic check (not by NOTIFY).
  std::uint64_t healed() const noexcept { return healed_.load(); }

 private:
  explicit PgHub(std::string url, Millis reconcile);
  void run();
  bool check_counter(PgConn& c, bool force);
  /// Drains the notifications libpq has read; true when there was one.
  bool drain_notifications(PGconn* c);
  bool wait_readable(int fd, int timeout_ms);

  std::string url_;
  std::atomic<std::int64_t> reconcile_ms_;
  std::atomic<std::uint64_t> counter_{1};
  std::atomic<std::uint64_t> healed_{0};
  std::atomic<bool> listening_{false};
  std::atomic<bool> stop_{false};
  int wake_fd_ = -1;
  std::int64_t last_row_ = -1;
  std::mutex subs_mu_;
  std::uint64_t next_sub_ = 1;
  std::vector<std::pair<std::uint64_t, std::function<void()>>> subs_;
  std::thread thread_;
};

/// The SQL every write runs inside its transaction: bump the shared counter and NOTIFY with its
/// new value (so a listener that heard it knows the counter check has nothing to heal).
inline constexpr const char* kSignalChange =
    "WITH c AS (UPDATE modelux_changes SET n = n + 1 WHERE id = 1 RETURNING n) SELECT pg_notify('modelux_control', n::text) FROM c";

/// Creates the shared bookkeeping tables once per database (serialised by an advisory lock so
/// that several instances starting together do not race on CREATE TABLE).
Result<void> ensure_schema(PgConn& c, std::string_view schema_sql);

}  // namespace modelux::pg
