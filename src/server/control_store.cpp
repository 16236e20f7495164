// The SQLite control store: versions, the hash-chained audit log, webhook secrets and
// deliveries, in one file (one connection behind a mutex). A version and its audit entry
// commit in one transaction. Triggers refuse UPDATE and DELETE on the versions and audit
// tables, so only a deliberate edit of the file (dropping the triggers) can change history,
// and the audit chain (plus the head kept in meta) shows that it did.
#include <sqlite3.h>

#include <mutex>

#include "modelux/control.hpp"
#include "modelux/keys.hpp"
#include "server/audit_chain.hpp"

namespace modelux {

namespace {

std::int64_t to_ms(WallTime t) { return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(); }
WallTime from_ms(std::int64_t ms) { return WallTime{std::chrono::duration_cast<WallTime::duration>(std::chrono::milliseconds{ms})}; }

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS versions (
  kind TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,
  author TEXT NOT NULL, at_ms INTEGER NOT NULL, message TEXT NOT NULL, action TEXT NOT NULL,
  document TEXT, hash TEXT NOT NULL,
  PRIMARY KEY (kind, name, version));
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL, from_addr TEXT NOT NULL,
  action TEXT NOT NULL, object TEXT NOT NULL, before_hash TEXT NOT NULL, after_hash TEXT NOT NULL,
  detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at_ms);
CREATE INDEX IF NOT EXISTS audit_actor ON audit(actor);
CREATE INDEX IF NOT EXISTS audit_object ON audit(object);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_secrets (webhook_id TEXT PRIMARY KEY, secret TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
  id TEXT PRIMARY KEY, webhook_id TEXT NOT NULL, event TEXT NOT NULL, payload TEXT NOT NULL,
  status TEXT NOT NULL, attempts INTEGER NOT NULL, created_ms INTEGER NOT NULL, next_ms INTEGER NOT NULL,
  delivered_ms INTEGER, last_status INTEGER NOT NULL, last_error TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_ms);
CREATE INDEX IF NOT EXISTS deliveries_hook ON deliveries(webhook_id, created_ms);
CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
)sql";

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { ok_ = sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) == SQLITE_OK; }
  ~Stmt() { sqlite3_finalize(st_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return ok_; }
  Stmt& text(int i, std::string_view s) {
    sqlite3_bind_text(st_, i, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& i64(int i, std::int64_t v) {
    sqlite3_bind_int64(st_, i, v);
    return *this;
  }
  Stmt& null(int i) {
    sqlite3_bind_null(st_, i);
    return *this;
  }
  int step() { return sqlite3_step(st_); }
  std::string col_text(int c) const {
    const unsigned char* t = sqlite3_column_text(st_, c);
    return t ? std::string(reinterpret_cast<const char*>(t), static_cast<std::size_t>(sqlite3_column_bytes(st_, c))) : std::string();
  }
  std::int64_t col_i64(int c) const { return sqlite3_column_int64(st_, c); }
  bool col_null(int c) const { return sqlite3_column_type(st_, c) == SQLITE_NULL; }

 private:
  sqlite3_stmt* st_ = nullptr;
  bool ok_ = false;
};

constexpr const char* kVersionCols = "kind, name, version, author, at_ms, message, action, document, hash";
constexpr const char* kAuditCols = "seq, at_ms, actor, from_addr, action, object, before_hash, after_hash, detail, prev_hash, hash";
constexpr const char* kDeliveryCols =
    "id, webhook_id, event, payload, status, attempts, created_ms, next_ms, delivered_ms, last_status, last_error";

ObjectVersion read_version(const Stmt& s) {
  ObjectVersion v;
  v.kind = s.col_text(0);
  v.name = s.col_text(1);
  v.version = s.col_i64(2);
  v.author = s.col_text(3);
  v.at = from_ms(s.col_i64(4));
  v.message = s.col_text(5);
  v.action = s.col_text(6);
  if (!s.col_null(7)) {
    auto j = parse_json(s.col_text(7));
    v.document = j ? std::move(*j) : Json();
  }
  v.hash = s.col_text(8);
  return v;
}

AuditEntry read_audit(const Stmt& s) {
  AuditEntry e;
  e.seq = s.col_i64(0);
  e.at = from_ms(s.col_i64(1));
  e.actor = s.col_text(2);
  e.from = s.col_text(3);
  e.action = s.col_text(4);
  e.object = s.col_text(5);
  e.before_hash = s.col_text(6);
  e.after_hash = s.col_text(7);
  e.detail = s.col_text(8);
  e.prev_hash = s.col_text(9);
  e.hash = s.col_text(10);
  return e;
}

WebhookDelivery read_delivery(const Stmt& s) {
  WebhookDelivery d;
  d.id = s.col_text(0);
  d.webhook_id = s.col_text(1);
  d.event = s.col_text(2);
  d.payload = s.col_text(3);
  d.status = s.col_text(4);
  d.attempts = static_cast<int>(s.col_i64(5));
  d.created = from_ms(s.col_i64(6));
  d.next_attempt = from_ms(s.col_i64(7));
  if (!s.col_null(8)) d.delivered = from_ms(s.col_i64(8));
  d.last_status = static_cast<int>(s.col_i64(9));
  d.last_error = s.col_text(10);
  return d;
}

class SqliteControlStore final : public ConfigStore, public AuditLog, public DeliveryLog {
 public:
  ~SqliteControlStore() override {
    if (db_) sqlite3_close_v2(db_);
  }

  static Result<std::shared_ptr<SqliteControlStore>> open(const std::string& path) {
    auto s = std::shared_ptr<SqliteControlStore>(new SqliteControlStore());
    s->path_ = path == ":memory:" ? std::string() : path;
    const std::string file = s->path_.empty() ? std::string(":memory:") : s->path_;
    if (sqlite3_open_v2(file.c_str(), &s->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK)
      return fail(s->err("open"));
    sqlite3_busy_timeout(s->db_, 5000);
    if (!s->path_.empty()) sqlite3_exec(s->db_, "PRAGMA journal_mode=WAL;", nullptr, nullptr, nullptr);
    if (sqlite3_exec(s->db_, kSchema, nullptr, nullptr, nullptr) != SQLITE_OK) return fail(s->err("create schema"));
    return s;
  }

  const std::string& path() const { return path_; }

  // ---- ConfigStore ----

  Result<std::vector<ObjectVersion>> heads(std::string_view kind) override {
    std::lock_guard lk(mu_);
    std::string sql = std::string("SELECT ") + kVersionCols +
                      " FROM versions v WHERE kind = ?1 AND version = (SELECT MAX(version) FROM versions w WHERE w.kind = v.kind AND "
                      "w.name = v.name) AND document IS NOT NULL ORDER BY name";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare heads"));
    s.text(1, kind);
    std::vector<ObjectVersion> out;
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) out.push_back(read_version(s));
    if (rc != SQLITE_DONE) return fail(err("read heads"));
    return out;
  }

  Result<std::optional<ObjectVersion>> head(std::string_view kind, std::string_view name) override {
    std::lock_guard lk(mu_);
    return head_locked(kind, name);
  }

  Result<std::optional<ObjectVersion>> get(std::string_view kind, std::string_view name, std::int64_t version) override {
    std::lock_guard lk(mu_);
    std::string sql = std::string("SELECT ") + kVersionCols + " FROM versions WHERE kind = ?1 AND name = ?2 AND version = ?3";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare get"));
    s.text(1, kind).text(2, name).i64(3, version);
    int rc = s.step();
    if (rc == SQLITE_ROW) return std::optional<ObjectVersion>(read_version(s));
    if (rc != SQLITE_DONE) return fail(err("read version"));
    return std::optional<ObjectVersion>();
  }

  Result<std::vector<ObjectVersion>> history(std::string_view kind, std::string_view name, std::size_t limit) override {
    std::lock_guard lk(mu_);
    std::string sql = std::string("SELECT ") + kVersionCols + " FROM versions WHERE kind = ?1 AND name = ?2 ORDER BY version DESC LIMIT ?3";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare history"));
    s.text(1, kind).text(2, name).i64(3, static_cast<std::int64_t>(limit));
    std::vector<ObjectVersion> out;
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) out.push_back(read_version(s));
    if (rc != SQLITE_DONE) return fail(err("read history"));
    return out;
  }

  Result<ObjectVersion> commit(ObjectVersion v, std::optional<std::int64_t> expected, AuditEntry audit) override {
    std::lock_guard lk(mu_);
    // IMMEDIATE: take the write lock before reading the head, so another process cannot slip
    // a version in between the check and the insert.
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(err("begin"));
    auto r = commit_locked(std::move(v), expected, std::move(audit));
    if (!r) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return r;
    }
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      auto e = err("commit");
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return fail(e);
    }
    ++own_writes_;
    return r;
  }

  Result<std::optional<std::string>> meta(std::string_view key) override {
    std::lock_guard lk(mu_);
    return meta_locked(key);
  }

  Result<void> set_meta(std::string_view key, std::string_view value) override {
    std::lock_guard lk(mu_);
    if (auto r = set_meta_locked(key, value); !r) return r;
    ++own_writes_;
    return {};
  }

  std::uint64_t change_counter() override {
    std::lock_guard lk(mu_);
    std::uint64_t v = 0;
    Stmt s(db_, "PRAGMA data_version");
    if (s.ok() && s.step() == SQLITE_ROW) v = static_cast<std::uint64_t>(s.col_i64(0));
    // data_version moves only for other connections' commits; our own are counted apart.
    return (v << 32) ^ own_writes_;
  }

  // ---- AuditLog ----

  Result<AuditEntry> append(AuditEntry e) override {
    std::lock_guard lk(mu_);
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return fail(err("begin"));
    auto r = append_locked(std::move(e));
    if (!r || sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      auto er = r ? err("commit") : r.error();
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return fail(er);
    }
    ++own_writes_;
    return r;
  }

  Result<std::vector<AuditEntry>> query(const AuditQuery& q) override {
    std::lock_guard lk(mu_);
    std::string sql = std::string("SELECT ") + kAuditCols + " FROM audit WHERE seq > ?1";
    if (q.since) sql += " AND at_ms >= ?2";
    if (q.until) sql += " AND at_ms <= ?3";
    if (!q.actor.empty()) sql += " AND actor = ?4";
    if (!q.object.empty()) sql += q.object.back() == ':' ? " AND substr(object, 1, length(?5)) = ?5" : " AND object = ?5";
    if (!q.action.empty()) sql += " AND action = ?6";
    sql += " ORDER BY seq LIMIT ?7";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare audit query"));
    s.i64(1, q.after_seq);
    if (q.since) s.i64(2, to_ms(*q.since));
    if (q.until) s.i64(3, to_ms(*q.until));
    if (!q.actor.empty()) s.text(4, q.actor);
    if (!q.object.empty()) s.text(5, q.object);
    if (!q.action.empty()) s.text(6, q.action);
    s.i64(7, static_cast<std::int64_t>(q.limit));
    std::vector<AuditEntry> out;
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) out.push_back(read_audit(s));
    if (rc != SQLITE_DONE) return fail(err("audit query"));
    return out;
  }

  Result<AuditVerification> verify() override {
    std::lock_guard lk(mu_);
    std::string sql = std::string("SELECT ") + kAuditCols + " FROM audit ORDER BY seq";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare verify"));
    AuditChainWalker walk;
    int rc;
    while ((rc = s.step()) == SQLITE_ROW)
      if (!walk.feed(read_audit(s))) return walk.result();
    if (rc != SQLITE_DONE) return fail(err("verify"));
    // The head is recorded with every append: deleting the newest entries shows up here.
    auto head_seq = meta_locked("audit_head_seq");
    auto head_hash = meta_locked("audit_head_hash");
    if (!head_seq || !head_hash) return fail(err("read audit head"));
    return walk.finish(*head_seq, *head_hash);
  }

  // ---- DeliveryLog ----

  Result<void> set_webhook_secret(std::string_view id, std::string_view secret) override {
    std::lock_guard lk(mu_);
    Stmt s(db_, "INSERT INTO webhook_secrets (webhook_id, secret) VALUES (?1, ?2) ON CONFLICT(webhook_id) DO UPDATE SET secret = ?2");
    if (!s.ok()) return fail(err("prepare secret"));
    s.text(1, id).text(2, secret);
    if (s.step() != SQLITE_DONE) return fail(err("write secret"));
    ++own_writes_;
    return {};
  }

  Result<std::optional<std::string>> webhook_secret(std::string_view id) override {
    std::lock_guard lk(mu_);
    Stmt s(db_, "SELECT secret FROM webhook_secrets WHERE webhook_id = ?1");
    if (!s.ok()) return fail(err("prepare secret"));
    s.text(1, id);
    int rc = s.step();
    if (rc == SQLITE_ROW) return std::optional<std::string>(s.col_text(0));
    if (rc != SQLITE_DONE) return fail(err("read secret"));
    return std::optional<std::string>();
  }

  Result<std::vector<std::string>> all_webhook_secrets() override {
    std::lock_guard lk(mu_);
    Stmt s(db_, "SELECT secret FROM webhook_secrets");
    if (!s.ok()) return fail(err("prepare secrets"));
    std::vector<std::string> out;
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) out.push_back(s.col_text(0));
    if (rc != SQLITE_DONE) return fail(err("read secrets"));
    return out;
  }

  Result<void> insert_delivery(const WebhookDelivery& d) override { return write_delivery(d, true); }
  Result<void> update_delivery(const WebhookDelivery& d) override { return write_delivery(d, false); }

  Result<std::optional<WebhookDelivery>> delivery(std::string_view id) override {
    std::lock_guard lk(mu_);
    std::string sql = std::string("SELECT ") + kDeliveryCols + " FROM deliveries WHERE id = ?1";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare delivery"));
    s.text(1, id);
    int rc = s.step();
    if (rc == SQLITE_ROW) return std::optional<WebhookDelivery>(read_delivery(s));
    if (rc != SQLITE_DONE) return fail(err("read delivery"));
    return std::optional<WebhookDelivery>();
  }

  Result<std::vector<WebhookDelivery>> deliveries(std::string_view webhook_id, std::size_t limit) override {
    std::lock_guard lk(mu_);
    std::string sql = std::string("SELECT ") + kDeliveryCols + " FROM deliveries" + (webhook_id.empty() ? "" : " WHERE webhook_id = ?1") +
                      " ORDER BY created_ms DESC, rowid DESC LIMIT ?2";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare deliveries"));
    if (!webhook_id.empty()) s.text(1, webhook_id);
    s.i64(2, static_cast<std::int64_t>(limit));
    std::vector<WebhookDelivery> out;
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) out.push_back(read_delivery(s));
    if (rc != SQLITE_DONE) return fail(err("read deliveries"));
    return out;
  }

  Result<std::vector<WebhookDelivery>> due_deliveries(WallTime now, std::size_t limit) override {
    std::lock_guard lk(mu_);
    std::string sql = std::string("SELECT ") + kDeliveryCols +
                      " FROM deliveries WHERE status = 'pending' AND next_ms <= ?1 ORDER BY next_ms, rowid LIMIT ?2";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare due"));
    s.i64(1, to_ms(now)).i64(2, static_cast<std::int64_t>(limit));
    std::vector<WebhookDelivery> out;
    int rc;
    while ((rc = s.step()) == SQLITE_ROW) out.push_back(read_delivery(s));
    if (rc != SQLITE_DONE) return fail(err("read due"));
    return out;
  }

 private:
  SqliteControlStore() = default;

  Error err(std::string_view what) const {
    Error e;
    e.kind = ErrorKind::io;
    e.message = "control store '" + (path_.empty() ? std::string(":memory:") : path_) + "': " + std::string(what) + ": " +
                (db_ ? sqlite3_errmsg(db_) : "cannot open");
    return e;
  }

  Result<std::optional<ObjectVersion>> head_locked(std::string_view kind, std::string_view name) {
    std::string sql = std::string("SELECT ") + kVersionCols + " FROM versions WHERE kind = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare head"));
    s.text(1, kind).text(2, name);
    int rc = s.step();
    if (rc == SQLITE_ROW) return std::optional<ObjectVersion>(read_version(s));
    if (rc != SQLITE_DONE) return fail(err("read head"));
    return std::optional<ObjectVersion>();
  }

  Result<std::optional<std::string>> meta_locked(std::string_view key) {
    Stmt s(db_, "SELECT value FROM meta WHERE key = ?1");
    if (!s.ok()) return fail(err("prepare meta"));
    s.text(1, key);
    int rc = s.step();
    if (rc == SQLITE_ROW) return std::optional<std::string>(s.col_text(0));
    if (rc != SQLITE_DONE) return fail(err("read meta"));
    return std::optional<std::string>();
  }

  Result<void> set_meta_locked(std::string_view key, std::string_view value) {
    Stmt s(db_, "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2");
    if (!s.ok()) return fail(err("prepare meta"));
    s.text(1, key).text(2, value);
    if (s.step() != SQLITE_DONE) return fail(err("write meta"));
    return {};
  }

  Result<ObjectVersion> commit_locked(ObjectVersion v, std::optional<std::int64_t> expected, AuditEntry audit) {
    auto cur = head_locked(v.kind, v.name);
    if (!cur) return fail(cur.error());
    std::int64_t have = *cur ? (*cur)->version : 0;
    // A deleted object counts as absent for "must not exist" (it may be created again).
    bool absent = !*cur || (*cur)->deleted();
    if (expected && !(*expected == have || (*expected == 0 && absent))) {
      Error e;
      e.kind = ErrorKind::bad_request;
      e.code = std::string(kVersionConflict);
      e.message = std::string(v.kind) + " '" + v.name + "' is at version " + std::to_string(have) + ", not " + std::to_string(*expected) +
                  ": someone changed it since you read it; read it again and retry";
      return fail(std::move(e));
    }
    v.version = have + 1;
    v.hash = document_hash(v.document);
    Stmt s(db_, "INSERT INTO versions (kind, name, version, author, at_ms, message, action, document, hash) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)");
    if (!s.ok()) return fail(err("prepare insert version"));
    s.text(1, v.kind).text(2, v.name).i64(3, v.version).text(4, v.author).i64(5, to_ms(v.at)).text(6, v.message).text(7, v.action);
    std::string doc = v.document.is_null() ? std::string() : v.document.dump(-1, ' ', false, Json::error_handler_t::replace);
    if (v.document.is_null()) s.null(8);
    else s.text(8, doc);
    s.text(9, v.hash);
    if (s.step() != SQLITE_DONE) return fail(err("insert version"));
    audit.before_hash = *cur ? (*cur)->hash : std::string();
    audit.after_hash = v.hash;
    auto a = append_locked(std::move(audit));
    if (!a) return fail(a.error());
    return v;
  }

  Result<AuditEntry> append_locked(AuditEntry e) {
    auto hs = meta_locked("audit_head_seq");
    auto hh = meta_locked("audit_head_hash");
    if (!hs || !hh) return fail(err("read audit head"));
    // The recorded head, not MAX(seq): an entry deleted at the end is not silently reused.
    std::int64_t last = 0;
    if (*hs) last = std::stoll(**hs);
    e.seq = last + 1;
    e.prev_hash = *hh ? **hh : std::string();
    e.hash = audit_entry_hash(e);
    std::string sql = std::string("INSERT INTO audit (") + kAuditCols + ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)";
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare audit insert"));
    s.i64(1, e.seq).i64(2, to_ms(e.at)).text(3, e.actor).text(4, e.from).text(5, e.action).text(6, e.object);
    s.text(7, e.before_hash).text(8, e.after_hash).text(9, e.detail).text(10, e.prev_hash).text(11, e.hash);
    if (s.step() != SQLITE_DONE) return fail(err("audit insert"));
    if (auto r = set_meta_locked("audit_head_seq", std::to_string(e.seq)); !r) return fail(r.error());
    if (auto r = set_meta_locked("audit_head_hash", e.hash); !r) return fail(r.error());
    return e;
  }

  Result<void> write_delivery(const WebhookDelivery& d, bool insert) {
    std::lock_guard lk(mu_);
    std::string sql = insert ? std::string("INSERT INTO deliveries (") + kDeliveryCols + ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
                             : std::string("UPDATE deliveries SET status = ?5, attempts = ?6, next_ms = ?8, delivered_ms = ?9, "
                                           "last_status = ?10, last_error = ?11 WHERE id = ?1");
    Stmt s(db_, sql.c_str());
    if (!s.ok()) return fail(err("prepare delivery write"));
    s.text(1, d.id);
    if (insert) s.text(2, d.webhook_id).text(3, d.event).text(4, d.payload).i64(7, to_ms(d.created));
    s.text(5, d.status).i64(6, d.attempts).i64(8, to_ms(d.next_attempt));
    if (d.delivered) s.i64(9, to_ms(*d.delivered));
    else s.null(9);
    s.i64(10, d.last_status).text(11, d.last_error);
    if (s.step() != SQLITE_DONE) return fail(err("delivery write"));
    ++own_writes_;
    return {};
  }

  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex mu_;
  std::uint64_t own_writes_ = 0;
};

}  // namespace

Result<ObjectVersion> commit_key_change(ConfigStore& store, const ManagedKey& key, bool revoked, const std::string& actor,
                                        const std::string& from, WallTime at) {
  ObjectVersion v{std::string(kKindKey), key.id, 0, actor, at, revoked ? "revoked" : "created", revoked ? "revoke" : "create", key.to_json(), {}};
  AuditEntry a;
  a.at = at;
  a.actor = actor;
  a.from = from;
  a.action = revoked ? "key.revoke" : "key.create";
  a.object = "key:" + key.id;
  a.detail = key.name;
  return store.commit(std::move(v), std::nullopt, std::move(a));
}

Result<ControlStore> open_sqlite_control_store(const std::string& path) {
  auto s = SqliteControlStore::open(path);
  if (!s) return fail(s.error());
  ControlStore cs;
  cs.configs = *s;
  cs.audit = *s;
  cs.deliveries = *s;
  cs.path = (*s)->path();
  return cs;
}

}  // namespace modelux
