// The PostgreSQL control store: the same three interfaces as the SQLite one (versions, the
// hash-chained audit log, webhook secrets and deliveries), shared by every instance of a
// fleet. Every write that changes what instances serve bumps the shared change counter and
// sends NOTIFY in its own transaction (pg_fleet.hpp), so the other instances hear of it at
// once, and their periodic counter check heals a notification they missed.
//
// Concurrency: a commit (and an audit append) locks the single audit head row first
// (SELECT … FOR UPDATE), so writers of all instances serialise there: the version check, the
// version insert, the audit entry and the new head are one transaction, and the chain stays a
// chain under concurrent writers. Triggers refuse UPDATE and DELETE on versions and audit.
//
// Threading: one connection behind a mutex; every call does network I/O (never on an io thread).
#include <mutex>

#include "modelux/control.hpp"
#include "server/audit_chain.hpp"
#include "server/pg_fleet.hpp"

namespace modelux {

namespace {

using pg::Param;
using pg::PgConn;
using pg::PgResult;

std::int64_t to_ms(WallTime t) { return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(); }
WallTime from_ms(std::int64_t ms) { return WallTime{std::chrono::duration_cast<WallTime::duration>(std::chrono::milliseconds{ms})}; }
std::string num(std::int64_t v) { return std::to_string(v); }
// "$3" (built by appending: GCC 12 warns falsely on "$" + std::string).
std::string placeholder(std::size_t i) {
  std::string s(1, '$');
  s += std::to_string(i);
  return s;
}

// A claimed due delivery is not handed to another instance for this long (its sender writes
// the outcome well before; a crashed sender's delivery is retried after it).
constexpr std::int64_t kClaimLeaseMs = 60'000;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS modelux_versions (
  kind TEXT NOT NULL, name TEXT NOT NULL, version BIGINT NOT NULL,
  author TEXT NOT NULL, at_ms BIGINT NOT NULL, message TEXT NOT NULL, action TEXT NOT NULL,
  document TEXT, hash TEXT NOT NULL,
  PRIMARY KEY (kind, name, version));
CREATE TABLE IF NOT EXISTS modelux_audit (
  seq BIGINT PRIMARY KEY, at_ms BIGINT NOT NULL, actor TEXT NOT NULL, from_addr TEXT NOT NULL,
  action TEXT NOT NULL, object TEXT NOT NULL, before_hash TEXT NOT NULL, after_hash TEXT NOT NULL,
  detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS modelux_audit_at ON modelux_audit(at_ms);
CREATE INDEX IF NOT EXISTS modelux_audit_actor ON modelux_audit(actor);
CREATE INDEX IF NOT EXISTS modelux_audit_object ON modelux_audit(object);
CREATE TABLE IF NOT EXISTS modelux_audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT, hash TEXT);
INSERT INTO modelux_audit_head (id, seq, hash) VALUES (1, NULL, NULL) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS modelux_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS modelux_webhook_secrets (webhook_id TEXT PRIMARY KEY, secret TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS modelux_deliveries (
  id TEXT PRIMARY KEY, webhook_id TEXT NOT NULL, event TEXT NOT NULL, payload TEXT NOT NULL,
  status TEXT NOT NULL, attempts INTEGER NOT NULL, created_ms BIGINT NOT NULL, next_ms BIGINT NOT NULL,
  delivered_ms BIGINT, last_status INTEGER NOT NULL, last_error TEXT NOT NULL, ord BIGSERIAL);
CREATE INDEX IF NOT EXISTS modelux_deliveries_due ON modelux_deliveries(status, next_ms);
CREATE INDEX IF NOT EXISTS modelux_deliveries_hook ON modelux_deliveries(webhook_id, created_ms);
CREATE OR REPLACE FUNCTION modelux_refuse_change() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$;
CREATE OR REPLACE TRIGGER modelux_versions_immutable BEFORE UPDATE OR DELETE ON modelux_versions
  FOR EACH ROW EXECUTE FUNCTION modelux_refuse_change();
CREATE OR REPLACE TRIGGER modelux_audit_append_only BEFORE UPDATE OR DELETE ON modelux_audit
  FOR EACH ROW EXECUTE FUNCTION modelux_refuse_change()
)sql";

constexpr const char* kVersionCols = "kind, name, version, author, at_ms, message, action, document, hash";
constexpr const char* kAuditCols = "seq, at_ms, actor, from_addr, action, object, before_hash, after_hash, detail, prev_hash, hash";
constexpr const char* kDeliveryCols =
    "id, webhook_id, event, payload, status, attempts, created_ms, next_ms, delivered_ms, last_status, last_error";

ObjectVersion read_version(const PgResult& r, int i) {
  ObjectVersion v;
  v.kind = r.text(i, 0);
  v.name = r.text(i, 1);
  v.version = r.i64(i, 2);
  v.author = r.text(i, 3);
  v.at = from_ms(r.i64(i, 4));
  v.message = r.text(i, 5);
  v.action = r.text(i, 6);
  if (!r.null(i, 7)) {
    auto j = parse_json(r.text(i, 7));
    v.document = j ? std::move(*j) : Json();
  }
  v.hash = r.text(i, 8);
  return v;
}

AuditEntry read_audit(const PgResult& r, int i) {
  AuditEntry e;
  e.seq = r.i64(i, 0);
  e.at = from_ms(r.i64(i, 1));
  e.actor = r.text(i, 2);
  e.from = r.text(i, 3);
  e.action = r.text(i, 4);
  e.object = r.text(i, 5);
  e.before_hash = r.text(i, 6);
  e.after_hash = r.text(i, 7);
  e.detail = r.text(i, 8);
  e.prev_hash = r.text(i, 9);
  e.hash = r.text(i, 10);
  return e;
}

WebhookDelivery read_delivery(const PgResult& r, int i) {
  WebhookDelivery d;
  d.id = r.text(i, 0);
  d.webhook_id = r.text(i, 1);
  d.event = r.text(i, 2);
  d.payload = r.text(i, 3);
  d.status = r.text(i, 4);
  d.attempts = static_cast<int>(r.i64(i, 5));
  d.created = from_ms(r.i64(i, 6));
  d.next_attempt = from_ms(r.i64(i, 7));
  if (!r.null(i, 8)) d.delivered = from_ms(r.i64(i, 8));
  d.last_status = static_cast<int>(r.i64(i, 9));
  d.last_error = r.text(i, 10);
  return d;
}

class PgControlStore final : public ConfigStore, public AuditLog, public DeliveryLog {
 public:
  PgControlStore(std::string url, std::shared_ptr<pg::PgHub> hub) : conn_(url, "modelux"), hub_(std::move(hub)) {}

  Result<void> init() {
    std::lock_guard lk(mu_);
    return pg::ensure_schema(conn_, kSchema);
  }

  // ---- ConfigStore ----

  Result<std::vector<ObjectVersion>> heads(std::string_view kind) override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec(std::string("SELECT DISTINCT ON (name) ") + kVersionCols +
                            " FROM modelux_versions WHERE kind = $1 ORDER BY name, version DESC",
                        {std::string(kind)});
    if (!r) return fail(r.error());
    std::vector<ObjectVersion> out;
    for (int i = 0; i < r->rows(); ++i)
      if (!r->null(i, 7)) out.push_back(read_version(*r, i));
    return out;
  }

  Result<std::optional<ObjectVersion>> head(std::string_view kind, std::string_view name) override {
    std::lock_guard lk(mu_);
    return head_locked(kind, name);
  }

  Result<std::optional<ObjectVersion>> get(std::string_view kind, std::string_view name, std::int64_t version) override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec(std::string("SELECT ") + kVersionCols + " FROM modelux_versions WHERE kind = $1 AND name = $2 AND version = $3",
                        {std::string(kind), std::string(name), num(version)});
    if (!r) return fail(r.error());
    if (r->rows() == 0) return std::optional<ObjectVersion>();
    return std::optional<ObjectVersion>(read_version(*r, 0));
  }

  Result<std::vector<ObjectVersion>> history(std::string_view kind, std::string_view name, std::size_t limit) override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec(std::string("SELECT ") + kVersionCols +
                            " FROM modelux_versions WHERE kind = $1 AND name = $2 ORDER BY version DESC LIMIT $3",
                        {std::string(kind), std::string(name), num(static_cast<std::int64_t>(limit))});
    if (!r) return fail(r.error());
    std::vector<ObjectVersion> out;
    for (int i = 0; i < r->rows(); ++i) out.push_back(read_version(*r, i));
    return out;
  }

  Result<ObjectVersion> commit(ObjectVersion v, std::optional<std::int64_t> expected, AuditEntry audit) override {
    std::lock_guard lk(mu_);
    if (auto b = begin_locked_head(); !b) return fail(b.error());
    auto r = commit_locked(std::move(v), expected, std::move(audit));
    if (!r) {
      conn_.rollback();
      return r;
    }
    if (auto c = finish(); !c) return fail(c.error());
    return r;
  }

  Result<std::optional<std::string>> meta(std::string_view key) override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec("SELECT value FROM modelux_meta WHERE key = $1", {std::string(key)});
    if (!r) return fail(r.error());
    if (r->rows() == 0) return std::optional<std::string>();
    return std::optional<std::string>(r->text(0, 0));
  }

  Result<void> set_meta(std::string_view key, std::string_view value) override {
    std::lock_guard lk(mu_);
    if (auto b = conn_.exec_script("BEGIN"); !b) return b;
    auto r = conn_.exec("INSERT INTO modelux_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        {std::string(key), std::string(value)});
    if (!r) {
      conn_.rollback();
      return fail(r.error());
    }
    return finish();
  }

  std::uint64_t change_counter() override { return hub_->counter(); }

  std::uint64_t watch(std::function<void()> on_change) override { return hub_->subscribe(std::move(on_change)); }
  void unwatch(std::uint64_t id) override { hub_->unsubscribe(id); }

  // ---- AuditLog ----

  Result<AuditEntry> append(AuditEntry e) override {
    std::lock_guard lk(mu_);
    if (auto b = begin_locked_head(); !b) return fail(b.error());
    auto r = append_locked(std::move(e));
    if (!r) {
      conn_.rollback();
      return r;
    }
    if (auto c = finish(); !c) return fail(c.error());
    return r;
  }

  Result<std::vector<AuditEntry>> query(const AuditQuery& q) override {
    std::lock_guard lk(mu_);
    std::string sql = std::string("SELECT ") + kAuditCols + " FROM modelux_audit WHERE seq > $1";
    std::vector<Param> p{num(q.after_seq)};
    auto param = [&](std::string val) {
      p.push_back(std::move(val));
      return placeholder(p.size());
    };
    if (q.since) sql += " AND at_ms >= " + param(num(to_ms(*q.since)));
    if (q.until) sql += " AND at_ms <= " + param(num(to_ms(*q.until)));
    if (!q.actor.empty()) sql += " AND actor = " + param(q.actor);
    if (!q.object.empty()) {
      std::string n = param(q.object);
      sql += q.object.back() == ':' ? " AND left(object, length(" + n + ")) = " + n : " AND object = " + n;
    }
    if (!q.action.empty()) sql += " AND action = " + param(q.action);
    p.push_back(num(static_cast<std::int64_t>(q.limit)));
    sql += " ORDER BY seq LIMIT " + placeholder(p.size());
    auto r = conn_.exec(sql, p);
    if (!r) return fail(r.error());
    std::vector<AuditEntry> out;
    for (int i = 0; i < r->rows(); ++i) out.push_back(read_audit(*r, i));
    return out;
  }

  Result<AuditVerification> verify() override {
    std::lock_guard lk(mu_);
    // One snapshot for the rows and the head: a writer committing meanwhile changes neither.
    if (auto b = conn_.exec_script("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !b) return fail(b.error());
    AuditChainWalker walk;
    // In pages, so a long log is never one giant result.
    std::int64_t after = 0;
    for (;;) {
      auto r = conn_.exec(std::string("SELECT ") + kAuditCols + " FROM modelux_audit WHERE seq > $1 ORDER BY seq LIMIT 5000", {num(after)});
      if (!r) {
        conn_.rollback();
        return fail(r.error());
      }
      for (int i = 0; i < r->rows(); ++i) {
        AuditEntry e = read_audit(*r, i);
        after = e.seq;
        if (!walk.feed(e)) {
          conn_.rollback();
          return walk.result();
        }
      }
      if (r->rows() < 5000) break;
    }
    auto h = conn_.exec("SELECT seq, hash FROM modelux_audit_head WHERE id = 1");
    conn_.rollback();
    if (!h) return fail(h.error());
    std::optional<std::string> head_seq, head_hash;
    if (h->rows() == 1 && !h->null(0, 0)) head_seq = h->text(0, 0);
    if (h->rows() == 1 && !h->null(0, 1)) head_hash = h->text(0, 1);
    return walk.finish(head_seq, head_hash);
  }

  // ---- DeliveryLog ----

  Result<void> set_webhook_secret(std::string_view id, std::string_view secret) override {
    std::lock_guard lk(mu_);
    if (auto b = conn_.exec_script("BEGIN"); !b) return b;
    auto r = conn_.exec(
        "INSERT INTO modelux_webhook_secrets (webhook_id, secret) VALUES ($1, $2) ON CONFLICT (webhook_id) DO UPDATE SET secret = EXCLUDED.secret",
        {std::string(id), std::string(secret)});
    if (!r) {
      conn_.rollback();
      return fail(r.error());
    }
    return finish();  // other instances register the new secret with their scrubber
  }

  Result<std::optional<std::string>> webhook_secret(std::string_view id) override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec("SELECT secret FROM modelux_webhook_secrets WHERE webhook_id = $1", {std::string(id)});
    if (!r) return fail(r.error());
    if (r->rows() == 0) return std::optional<std::string>();
    return std::optional<std::string>(r->text(0, 0));
  }

  Result<std::vector<std::string>> all_webhook_secrets() override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec("SELECT secret FROM modelux_webhook_secrets");
    if (!r) return fail(r.error());
    std::vector<std::string> out;
    for (int i = 0; i < r->rows(); ++i) out.push_back(r->text(i, 0));
    return out;
  }

  Result<void> insert_delivery(const WebhookDelivery& d) override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec(std::string("INSERT INTO modelux_deliveries (") + kDeliveryCols + ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                        {d.id, d.webhook_id, d.event, d.payload, d.status, num(d.attempts), num(to_ms(d.created)), num(to_ms(d.next_attempt)),
                         d.delivered ? Param(num(to_ms(*d.delivered))) : Param(), num(d.last_status), d.last_error});
    if (!r) return fail(r.error());
    return {};
  }

  Result<void> update_delivery(const WebhookDelivery& d) override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec(
        "UPDATE modelux_deliveries SET status = $2, attempts = $3, next_ms = $4, delivered_ms = $5, last_status = $6, last_error = $7 WHERE id = $1",
        {d.id, d.status, num(d.attempts), num(to_ms(d.next_attempt)), d.delivered ? Param(num(to_ms(*d.delivered))) : Param(),
         num(d.last_status), d.last_error});
    if (!r) return fail(r.error());
    return {};
  }

  Result<std::optional<WebhookDelivery>> delivery(std::string_view id) override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec(std::string("SELECT ") + kDeliveryCols + " FROM modelux_deliveries WHERE id = $1", {std::string(id)});
    if (!r) return fail(r.error());
    if (r->rows() == 0) return std::optional<WebhookDelivery>();
    return std::optional<WebhookDelivery>(read_delivery(*r, 0));
  }

  Result<std::vector<WebhookDelivery>> deliveries(std::string_view webhook_id, std::size_t limit) override {
    std::lock_guard lk(mu_);
    std::vector<Param> p;
    std::string sql = std::string("SELECT ") + kDeliveryCols + " FROM modelux_deliveries";
    if (!webhook_id.empty()) {
      sql += " WHERE webhook_id = $1";
      p.push_back(std::string(webhook_id));
    }
    p.push_back(num(static_cast<std::int64_t>(limit)));
    sql += " ORDER BY created_ms DESC, ord DESC LIMIT " + placeholder(p.size());
    auto r = conn_.exec(sql, p);
    if (!r) return fail(r.error());
    std::vector<WebhookDelivery> out;
    for (int i = 0; i < r->rows(); ++i) out.push_back(read_delivery(*r, i));
    return out;
  }

  Result<std::vector<WebhookDelivery>> due_deliveries(WallTime now, std::size_t limit) override {
    std::lock_guard lk(mu_);
    // Claimed as they are read: with several instances, each due delivery goes to one sender
    // (SKIP LOCKED: instances never wait for each other here). The rows come back as they were.
    auto r = conn_.exec(std::string("WITH due AS (SELECT id, next_ms AS was FROM modelux_deliveries WHERE status = 'pending' AND next_ms <= $1 "
                                    "ORDER BY next_ms, ord LIMIT $2 FOR UPDATE SKIP LOCKED) "
                                    "UPDATE modelux_deliveries d SET next_ms = $1 + $3 FROM due WHERE d.id = due.id RETURNING ") +
                            "d.id, d.webhook_id, d.event, d.payload, d.status, d.attempts, d.created_ms, due.was, d.delivered_ms, "
                            "d.last_status, d.last_error, d.ord",
                        {num(to_ms(now)), num(static_cast<std::int64_t>(limit)), num(kClaimLeaseMs)});
    if (!r) return fail(r.error());
    std::vector<std::pair<std::pair<std::int64_t, std::int64_t>, WebhookDelivery>> rows;
    for (int i = 0; i < r->rows(); ++i) rows.push_back({{r->i64(i, 7), r->i64(i, 11)}, read_delivery(*r, i)});
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<WebhookDelivery> out;
    for (auto& [k, d] : rows) out.push_back(std::move(d));
    return out;
  }

 private:
  Result<std::optional<ObjectVersion>> head_locked(std::string_view kind, std::string_view name) {
    auto r = conn_.exec(std::string("SELECT ") + kVersionCols +
                            " FROM modelux_versions WHERE kind = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
                        {std::string(kind), std::string(name)});
    if (!r) return fail(r.error());
    if (r->rows() == 0) return std::optional<ObjectVersion>();
    return std::optional<ObjectVersion>(read_version(*r, 0));
  }

  // BEGIN and lock the audit head: every writer of every instance queues here, so the checks
  // that follow (READ COMMITTED: each statement sees what committed before it) are current.
  Result<void> begin_locked_head() {
    if (auto b = conn_.exec_script("BEGIN"); !b) return b;
    auto r = conn_.exec("SELECT seq, hash FROM modelux_audit_head WHERE id = 1 FOR UPDATE");
    if (!r || r->rows() != 1) {
      Error e = r ? conn_.error("the audit head row is missing") : r.error();
      conn_.rollback();
      return fail(std::move(e));
    }
    head_seq_ = r->null(0, 0) ? 0 : r->i64(0, 0);
    head_hash_ = r->null(0, 1) ? std::string() : r->text(0, 1);
    return {};
  }

  // Signal the change and COMMIT (NOTIFY is delivered at commit, only if it commits).
  Result<void> finish() {
    if (auto s = conn_.exec_script(pg::kSignalChange); !s) {
      conn_.rollback();
      return s;
    }
    if (auto c = conn_.exec_script("COMMIT"); !c) {
      conn_.rollback();
      return c;
    }
    hub_->bump();
    return {};
  }

  Result<ObjectVersion> commit_locked(ObjectVersion v, std::optional<std::int64_t> expected, AuditEntry audit) {
    auto cur = head_locked(v.kind, v.name);
    if (!cur) return fail(cur.error());
    std::int64_t have = *cur ? (*cur)->version : 0;
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
    Param doc = v.document.is_null() ? Param() : Param(v.document.dump(-1, ' ', false, Json::error_handler_t::replace));
    auto r = conn_.exec("INSERT INTO modelux_versions (kind, name, version, author, at_ms, message, action, document, hash) "
                        "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                        {v.kind, v.name, num(v.version), v.author, num(to_ms(v.at)), v.message, v.action, doc, v.hash});
    if (!r) return fail(r.error());
    audit.before_hash = *cur ? (*cur)->hash : std::string();
    audit.after_hash = v.hash;
    auto a = append_locked(std::move(audit));
    if (!a) return fail(a.error());
    return v;
  }

  Result<AuditEntry> append_locked(AuditEntry e) {
    // The recorded head, not MAX(seq): an entry deleted at the end is not silently reused.
    e.seq = head_seq_ + 1;
    e.prev_hash = head_hash_;
    e.hash = audit_entry_hash(e);
    auto r = conn_.exec(std::string("INSERT INTO modelux_audit (") + kAuditCols + ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                        {num(e.seq), num(to_ms(e.at)), e.actor, e.from, e.action, e.object, e.before_hash, e.after_hash, e.detail,
                         e.prev_hash, e.hash});
    if (!r) return fail(r.error());
    auto h = conn_.exec("UPDATE modelux_audit_head SET seq = $1, hash = $2 WHERE id = 1", {num(e.seq), e.hash});
    if (!h) return fail(h.error());
    head_seq_ = e.seq;
    head_hash_ = e.hash;
    return e;
  }

  std::mutex mu_;
  PgConn conn_;
  std::shared_ptr<pg::PgHub> hub_;
  std::int64_t head_seq_ = 0;  // of the transaction in progress
  std::string head_hash_;
};

}  // namespace

Result<ControlStore> open_postgres_control_store(const std::string& url, Millis reconcile) {
  auto hub = pg::PgHub::for_url(url, reconcile);
  auto s = std::make_shared<PgControlStore>(url, hub);
  if (auto r = s->init(); !r) return fail(r.error());
  ControlStore cs;
  cs.configs = s;
  cs.audit = s;
  cs.deliveries = s;
  cs.path = url;
  return cs;
}

Result<ControlStore> open_control_store(const std::string& path_or_url, Millis reconcile) {
  if (pg::is_postgres_url(path_or_url)) return open_postgres_control_store(path_or_url, reconcile);
  return open_sqlite_control_store(path_or_url);
}

}  // namespace modelux
