// Thin RAII over the SQLite C API for the trace store: a prepared statement with typed binds
// and reads, and the mapping of SQLite result codes onto Errors a person can act on.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "modelux/core.hpp"

namespace modelux::trace_detail {

/// An io Error naming the file and the cause: "locked by another connection", "not a SQLite
/// database or corrupt", "cannot open". `what` says what we were doing.
inline Error sqlite_error(sqlite3* db, int rc, std::string_view what, std::string_view path) {
  Error e;
  e.kind = ErrorKind::io;
  std::string file = path.empty() || path == ":memory:" ? std::string("in-memory trace store")
                                                        : "trace store '" + std::string(path) + "'";
  std::string detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      e.message = file + " is locked by another connection (" + std::string(what) + ": " + detail +
                  "); retry when the other process releases it";
      break;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      e.message = file + " is not a SQLite database or is corrupt (" + std::string(what) + ": " + detail +
                  "); move it aside and let modelux create a new one";
      break;
    case SQLITE_CANTOPEN:
      e.message = "cannot open " + file + " (" + std::string(what) + ": " + detail + ")";
      break;
    case SQLITE_READONLY:
      e.message = file + " is read-only (" + std::string(what) + ": " + detail + ")";
      break;
    case SQLITE_FULL:
      e.message = file + ": disk full (" + std::string(what) + ": " + detail + ")";
      break;
    default:
      e.message = file + ": " + std::string(what) + " failed: " + detail;
  }
  e.code = sqlite3_errstr(rc);
  return e;
}

class Stmt {
 public:
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt(Stmt&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
  Stmt& operator=(Stmt&& o) noexcept {
    if (this != &o) {
      finalize();
      s_ = o.s_;
      o.s_ = nullptr;
    }
    return *this;
  }
  ~Stmt() { finalize(); }

  int prepare(sqlite3* db, std::string_view sql) {
    finalize();
    return sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &s_, nullptr);
  }
  void finalize() {
    if (s_) sqlite3_finalize(s_);
    s_ = nullptr;
  }
  explicit operator bool() const noexcept { return s_ != nullptr; }
  sqlite3_stmt* get() const noexcept { return s_; }

  void reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  void bind(int i, std::string_view v) { sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT); }
  void bind_static(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  }
  void bind(int i, std::int64_t v) { sqlite3_bind_int64(s_, i, v); }
  void bind(int i, int v) { sqlite3_bind_int64(s_, i, v); }
  void bind(int i, double v) { sqlite3_bind_double(s_, i, v); }
  void bind(int i, bool v) { sqlite3_bind_int(s_, i, v ? 1 : 0); }
  /// SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return sqlite3_step(s_); }

  std::int64_t i64(int c) const { return sqlite3_column_int64(s_, c); }
  double dbl(int c) const { return sqlite3_column_double(s_, c); }
  std::string_view text(int c) const {
    auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_, c));
    return p ? std::string_view(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, c))) : std::string_view{};
  }

 private:
  sqlite3_stmt* s_ = nullptr;
};

}  // namespace modelux::trace_detail
