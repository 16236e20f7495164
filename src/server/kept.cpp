// Kept responses (see kept.hpp).
#include "server/kept.hpp"

#include <sqlite3.h>

#include <cstdio>

#include "modelux/scrub.hpp"
#include "trace/sqlite.hpp"

namespace modelux::proxy {

using trace_detail::Stmt;

namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS kept_responses (
  id TEXT PRIMARY KEY,
  key_id TEXT NOT NULL,
  project TEXT NOT NULL,
  status INTEGER NOT NULL,
  content_type TEXT NOT NULL,
  body BLOB NOT NULL,
  created_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS kept_responses_expiry ON kept_responses(expires_ms);
)sql";

Error db_error(sqlite3* db, std::string_view what, const std::string& path) {
  Error e;
  e.kind = ErrorKind::io;
  e.message = "kept-response store '" + (path.empty() ? std::string(":memory:") : path) + "': " + std::string(what) + " failed: " +
              (db ? sqlite3_errmsg(db) : "cannot open");
  return e;
}

// A request id a client may choose: what our own ids look like, and nothing that could
// confuse a path or a log line.
bool valid_request_id(std::string_view id) noexcept {
  if (id.size() < 8 || id.size() > 128) return false;
  for (char ch : id)
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-')) return false;
  return true;
}

Refusal refuse(int status, std::string message, std::string code, std::string param) {
  Refusal r;
  r.status = status;
  r.error.kind = ErrorKind::bad_request;
  r.error.message = std::move(message);
  r.error.code = std::move(code);
  r.error.path = std::move(param);
  return r;
}

}  // namespace

// ---- KeptStore ----------------------------------------------------------------------------

struct KeptStore::Db {
  sqlite3* db = nullptr;
  Stmt put, get, purge;
  ~Db() {
    put.finalize();
    get.finalize();
    purge.finalize();
    if (db) sqlite3_close_v2(db);
  }
};

KeptStore::KeptStore(std::string path) : path_(std::move(path)) {}
KeptStore::~KeptStore() = default;

Result<void> KeptStore::open_locked() {
  if (db_) return {};
  auto d = std::make_unique<Db>();
  std::string file = path_.empty() ? std::string(":memory:") : path_;
  if (sqlite3_open_v2(file.c_str(), &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK)
    return fail(db_error(d->db, "open", path_));
  sqlite3_busy_timeout(d->db, 2000);
  if (!path_.empty()) sqlite3_exec(d->db, "PRAGMA journal_mode=WAL;", nullptr, nullptr, nullptr);
  if (sqlite3_exec(d->db, kSchema, nullptr, nullptr, nullptr) != SQLITE_OK) return fail(db_error(d->db, "create schema", path_));
  if (d->put.prepare(d->db,
                     "INSERT INTO kept_responses (id, key_id, project, status, content_type, body, created_ms, expires_ms) "
                     "VALUES (?,?,?,?,?,?,?,?)") != SQLITE_OK ||
      d->get.prepare(d->db,
                     "SELECT id, key_id, project, status, content_type, body, created_ms, expires_ms FROM kept_responses "
                     "WHERE id = ? AND expires_ms > ?") != SQLITE_OK ||
      d->purge.prepare(d->db, "DELETE FROM kept_responses WHERE expires_ms <= ?") != SQLITE_OK)
    return fail(db_error(d->db, "prepare", path_));
  db_ = std::move(d);
  return {};
}

Result<void> KeptStore::put(const KeptRecord& r, std::int64_t now_ms) {
  std::lock_guard lk(mu_);
  if (auto o = open_locked(); !o) return o;
  Stmt& p = db_->purge;
  p.reset();
  p.bind(1, now_ms);
  if (p.step() != SQLITE_DONE) return fail(db_error(db_->db, "expire", path_));
  Stmt& s = db_->put;
  s.reset();
  s.bind(1, std::string_view(r.id));
  s.bind(2, std::string_view(r.key_id));
  s.bind(3, std::string_view(r.project));
  s.bind(4, r.status);
  s.bind(5, std::string_view(r.content_type));
  sqlite3_bind_blob(s.get(), 6, r.body.data(), static_cast<int>(r.body.size()), SQLITE_TRANSIENT);
  s.bind(7, r.created_ms);
  s.bind(8, r.expires_ms);
  if (s.step() != SQLITE_DONE) return fail(db_error(db_->db, "insert", path_));
  return {};
}

Result<std::optional<KeptRecord>> KeptStore::get(std::string_view id, std::int64_t now_ms) {
  std::lock_guard lk(mu_);
  if (auto o = open_locked(); !o) return fail(o.error());
  Stmt& s = db_->get;
  s.reset();
  s.bind(1, id);
  s.bind(2, now_ms);
  int rc = s.step();
  if (rc == SQLITE_DONE) return std::optional<KeptRecord>{};
  if (rc != SQLITE_ROW) return fail(db_error(db_->db, "read", path_));
  KeptRecord r;
  r.id = s.text(0);
  r.key_id = s.text(1);
  r.project = s.text(2);
  r.status = static_cast<int>(s.i64(3));
  r.content_type = s.text(4);
  const void* b = sqlite3_column_blob(s.get(), 5);
  r.body.assign(static_cast<const char*>(b ? b : ""), static_cast<std::size_t>(sqlite3_column_bytes(s.get(), 5)));
  r.created_ms = s.i64(6);
  r.expires_ms = s.i64(7);
  s.reset();
  return std::optional<KeptRecord>(std::move(r));
}

// ---- KeptResponses ------------------------------------------------------------------------

KeptResponses::KeptResponses(KeepConfig cfg, std::string path, const Clock& clock)
    : cfg_(std::move(cfg)), clock_(clock), store_(std::move(path)) {}

std::int64_t KeptResponses::now_ms() const noexcept {
  return std::chrono::duration_cast<Millis>(clock_.wall_now().time_since_epoch()).count();
}

bool KeptResponses::begin(const std::string& id, Owner owner) {
  std::lock_guard lk(mu_);
  return in_flight_.emplace(id, std::move(owner)).second;
}

std::optional<KeptResponses::Owner> KeptResponses::in_flight(const std::string& id) const {
  std::lock_guard lk(mu_);
  auto it = in_flight_.find(id);
  if (it == in_flight_.end()) return std::nullopt;
  return it->second;
}

void KeptResponses::end(const std::string& id) {
  std::lock_guard lk(mu_);
  in_flight_.erase(id);
}

// ---- KeptRequest --------------------------------------------------------------------------

net::awaitable<std::expected<std::shared_ptr<KeptRequest>, Refusal>> KeptRequest::begin(RouteCtx& c, const ChatRequest& creq,
                                                                                          CallContext& ctx) {
  using Out = std::expected<std::shared_ptr<KeptRequest>, Refusal>;
  Proxy::State& st = c.st;
  KeptResponses& kr = *st.kept;
  // The routing config's default, then the header, which may switch it either way.
  std::optional<Millis> ttl;
  if (creq.model.starts_with('@')) {
    if (auto pol = st.router->routing_config(std::string_view(creq.model).substr(1))) {
      const Json& src = pol->source();
      if (auto k = src.find("keep_responses"); k != src.end() && k->is_object())
        if (auto t = k->find("ttl_s"); t != k->end() && t->is_number())
          ttl = Millis{static_cast<std::int64_t>(t->get<double>() * 1000)};
    }
  }
  if (const std::string* h = c.req.header("x-modelux-keep")) {
    if (*h == "1" || *h == "true" || *h == "yes") {
      if (!ttl) ttl = kr.config().default_ttl;
    } else if (*h == "0" || *h == "false" || *h == "no") {
      ttl.reset();
    } else {
      co_return Out(std::unexpect, refuse(400, "x-modelux-keep takes 1 or 0", "invalid_keep", "x-modelux-keep"));
    }
  }
  const std::string* chosen = c.req.header("x-modelux-request-id");
  if (!ttl) {
    if (chosen) co_return Out(std::unexpect, refuse(400, "x-modelux-request-id is only taken with x-modelux-keep: 1 (or a config's keep_responses)",
                                                     "invalid_request_id", "x-modelux-request-id"));
    co_return Out(std::shared_ptr<KeptRequest>{});
  }
  if (*ttl > kr.config().max_ttl) ttl = kr.config().max_ttl;
  if (chosen) {
    if (!valid_request_id(*chosen))
      co_return Out(std::unexpect, refuse(400, "x-modelux-request-id must be 8 to 128 characters of [A-Za-z0-9_-]", "invalid_request_id",
                                           "x-modelux-request-id"));
    // Taken by a kept answer already stored (read on the pool: the io thread never touches disk).
    std::string id = *chosen;
    std::int64_t now = kr.now_ms();
    KeptStore* store = &kr.store();
    auto job = [store, id, now]() -> int {
      auto got = store->get(id, now);
      return !got ? -1 : got->has_value() ? 1 : 0;
    };
    int taken = co_await st.workers->run(std::move(job));
    if (taken != 0)
      co_return Out(std::unexpect, refuse(409, taken > 0 ? "this x-modelux-request-id was used already" : "the kept-response store cannot be read",
                                           "request_id_taken", "x-modelux-request-id"));
    ctx.request_id = id;
  }
  KeptRecord rec;
  rec.id = ctx.request_id;
  rec.key_id = ctx.api_key_id;
  rec.project = ctx.project;
  rec.created_ms = kr.now_ms();
  rec.expires_ms = rec.created_ms + ttl->count();
  if (!kr.begin(rec.id, KeptResponses::Owner{rec.key_id, rec.project}))
    co_return Out(std::unexpect, refuse(409, "this x-modelux-request-id is in flight already", "request_id_taken", "x-modelux-request-id"));
  kr.kept.fetch_add(1, std::memory_order_relaxed);
  co_return Out(std::make_shared<KeptRequest>(kr, *st.workers, std::move(rec)));
}

KeptRequest::~KeptRequest() {
  if (!stored_) kr_.end(rec_.id);
}

void KeptRequest::client_left() noexcept {
  if (!gone_) kr_.clients_left.fetch_add(1, std::memory_order_relaxed);
  gone_ = true;
}

void KeptRequest::store(int status, std::string body) {
  if (stored_) return;
  stored_ = true;
  rec_.status = status;
  rec_.body = std::move(body);
  // Written on the pool; the in-flight entry goes only once the row is there, so a reader
  // sees "in progress" until it can read the answer.
  KeptResponses* kr = &kr_;
  pool_.post([kr, rec = std::move(rec_)]() {
    auto r = kr->store().put(rec, kr->now_ms());
    if (r) {
      kr->stored.fetch_add(1, std::memory_order_relaxed);
    } else {
      kr->store_errors.fetch_add(1, std::memory_order_relaxed);
      std::fprintf(stderr, "modelux: kept response %s not stored: %s\n", rec.id.c_str(), scrubbed(r.error().message).c_str());
    }
    kr->end(rec.id);
  });
}

AsyncChunkSink keep_stream(std::shared_ptr<KeptRequest> kept, AsyncChunkSink inner) {
  return [kept = std::move(kept), inner = std::move(inner)](const ChatChunk& ch) -> net::awaitable<bool> {
    kept->add(ch);
    if (kept->client_gone()) co_return true;
    if (!co_await inner(ch)) kept->client_left();
    co_return true;
  };
}

// ---- GET /v1/kept/{request_id} ------------------------------------------------------------

net::awaitable<std::optional<Reply>> get_kept(RouteCtx& c) {
  Proxy::State& st = c.st;
  KeptResponses& kr = *st.kept;
  const std::string id = c.params.at(0);
  // One answer for "unknown", "expired" and "not yours": the id of someone else's request
  // tells its holder nothing.
  auto not_found = [&] {
    return error_reply(404, ErrorKind::not_found, "no kept response '" + id.substr(0, 128) + "' for this key (unknown, expired or not kept)",
                       "kept_response_not_found");
  };
  if (!valid_request_id(id)) co_return not_found();
  auto may_read = [&](const std::string& key_id, const std::string& project) {
    if (c.caller.admin()) return true;
    if (c.caller.key && !key_id.empty() && c.caller.key->id == key_id) return true;
    return !project.empty() && project == c.caller.project;
  };
  if (auto owner = kr.in_flight(id)) {
    if (!may_read(owner->key_id, owner->project)) co_return not_found();
    Reply r = json_reply({{"id", id}, {"object", "kept_response"}, {"status", "in_progress"}}, 202);
    r.headers.emplace_back("x-modelux-kept-status", "in_progress");
    r.headers.emplace_back("retry-after", "1");
    co_return r;
  }
  std::int64_t now = kr.now_ms();
  KeptStore* store = &kr.store();
  auto job = [store, id, now]() { return store->get(id, now); };
  Result<std::optional<KeptRecord>> got = co_await st.workers->run(std::move(job));
  if (!got) co_return error_reply(500, ErrorKind::io, got.error().message, "kept_store_error");
  if (!got->has_value() || !may_read((*got)->key_id, (*got)->project)) co_return not_found();
  KeptRecord& rec = **got;
  Reply r;
  r.status = rec.status;
  r.content_type = std::move(rec.content_type);
  r.body = std::move(rec.body);
  r.headers.emplace_back("x-request-id", id);
  r.headers.emplace_back("x-modelux-kept-status", rec.status < 400 ? "completed" : "failed");
  r.headers.emplace_back("x-modelux-kept-expires", std::to_string(rec.expires_ms));
  co_return r;
}

}  // namespace modelux::proxy
