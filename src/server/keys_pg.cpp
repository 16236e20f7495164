// Managed keys in PostgreSQL: the fleet's shared key table. A create or revoke bumps the
// shared change counter and NOTIFYs in its transaction, so every instance's KeyRegistry sees
// the change through its hub (pg_fleet.hpp) without a query per request.
#include <mutex>

#include "server/key_backend.hpp"
#include "server/pg_fleet.hpp"

namespace modelux {

namespace {

using pg::Param;
using pg::PgResult;

std::int64_t to_ms(WallTime t) { return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(); }
WallTime from_ms(std::int64_t ms) { return WallTime{std::chrono::duration_cast<WallTime::duration>(std::chrono::milliseconds{ms})}; }
std::string num(std::int64_t v) { return std::to_string(v); }

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS modelux_api_keys (
  id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, hint TEXT NOT NULL, name TEXT NOT NULL,
  project TEXT NOT NULL, org TEXT NOT NULL, role TEXT NOT NULL, models TEXT NOT NULL, configs TEXT NOT NULL,
  rpm INTEGER NOT NULL, max_concurrency INTEGER NOT NULL, expires_ms BIGINT, created_ms BIGINT NOT NULL, revoked_ms BIGINT)
)sql";

constexpr const char* kColumns =
    "id, hash, hint, name, project, org, role, models, configs, rpm, max_concurrency, expires_ms, created_ms, revoked_ms";

ManagedKey read_row(const PgResult& r, int i, std::string* hash) {
  ManagedKey k;
  k.id = r.text(i, 0);
  if (hash) *hash = r.text(i, 1);
  k.hint = r.text(i, 2);
  k.name = r.text(i, 3);
  k.project = r.text(i, 4);
  k.org = r.text(i, 5);
  k.role = key_role_from_string(r.text(i, 6)).value_or(KeyRole::viewer);  // unknown: least privilege
  k.limits.models = key_list_from_text(r.text(i, 7));
  k.limits.configs = key_list_from_text(r.text(i, 8));
  k.limits.rpm = static_cast<int>(r.i64(i, 9));
  k.limits.max_concurrency = static_cast<int>(r.i64(i, 10));
  if (!r.null(i, 11)) k.expires = from_ms(r.i64(i, 11));
  k.created = from_ms(r.i64(i, 12));
  if (!r.null(i, 13)) k.revoked = from_ms(r.i64(i, 13));
  return k;
}

class PgKeyBackend final : public KeyBackend {
 public:
  PgKeyBackend(const std::string& url, std::shared_ptr<pg::PgHub> hub) : conn_(url, "modelux"), hub_(std::move(hub)) {}

  Result<void> init() {
    std::lock_guard lk(mu_);
    return pg::ensure_schema(conn_, kSchema);
  }

  Result<void> insert(const ManagedKey& k, const std::string& hash) override {
    std::lock_guard lk(mu_);
    if (auto b = conn_.exec_script("BEGIN"); !b) return b;
    auto r = conn_.exec(std::string("INSERT INTO modelux_api_keys (") + kColumns + ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,NULL)",
                        {k.id, hash, k.hint, k.name, k.project, k.org, std::string(to_string(k.role)), key_list_text(k.limits.models),
                         key_list_text(k.limits.configs), num(k.limits.rpm), num(k.limits.max_concurrency),
                         k.expires ? Param(num(to_ms(*k.expires))) : Param(), num(to_ms(k.created))});
    if (!r) {
      conn_.rollback();
      return fail(r.error());
    }
    return finish();
  }

  Result<std::vector<ManagedKey>> list() override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec(std::string("SELECT ") + kColumns + " FROM modelux_api_keys ORDER BY created_ms DESC, id");
    if (!r) return fail(r.error());
    std::vector<ManagedKey> out;
    for (int i = 0; i < r->rows(); ++i) out.push_back(read_row(*r, i, nullptr));
    return out;
  }

  Result<bool> revoke(const std::string& id, WallTime now) override {
    std::lock_guard lk(mu_);
    if (auto b = conn_.exec_script("BEGIN"); !b) return fail(b.error());
    auto r = conn_.exec("UPDATE modelux_api_keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL", {num(to_ms(now)), id});
    if (!r) {
      conn_.rollback();
      return fail(r.error());
    }
    bool changed = r->affected() > 0;
    if (auto c = finish(); !c) return fail(c.error());
    return changed;
  }

  Result<std::vector<std::pair<std::string, ManagedKey>>> unrevoked() override {
    std::lock_guard lk(mu_);
    auto r = conn_.exec(std::string("SELECT ") + kColumns + " FROM modelux_api_keys WHERE revoked_ms IS NULL");
    if (!r) return fail(r.error());
    std::vector<std::pair<std::string, ManagedKey>> out;
    for (int i = 0; i < r->rows(); ++i) {
      std::string hash;
      ManagedKey k = read_row(*r, i, &hash);
      out.emplace_back(std::move(hash), std::move(k));
    }
    return out;
  }

  std::uint64_t change_counter() override { return hub_->counter(); }

 private:
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

  std::mutex mu_;
  pg::PgConn conn_;
  std::shared_ptr<pg::PgHub> hub_;
};

}  // namespace

Result<std::unique_ptr<KeyBackend>> open_postgres_key_backend(const std::string& url) {
  auto b = std::make_unique<PgKeyBackend>(url, pg::PgHub::for_url(url));
  if (auto r = b->init(); !r) return fail(r.error());
  return std::unique_ptr<KeyBackend>(std::move(b));
}

}  // namespace modelux
