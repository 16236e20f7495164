// Managed modelux API keys in SQLite: hash-only storage, create / list / revoke, and a cheap
// change counter so a running proxy sees a revocation made by the CLI on its next request.
#include "modelux/keys.hpp"

#include "server/key_backend.hpp"

#include <sqlite3.h>

#include <charconv>
#include <ctime>
#include <mutex>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

namespace modelux {

std::string_view to_string(KeyRole r) noexcept {
  switch (r) {
    case KeyRole::admin: return "admin";
    case KeyRole::project: return "project";
    case KeyRole::viewer: return "viewer";
  }
  return "project";
}

std::optional<KeyRole> key_role_from_string(std::string_view s) noexcept {
  if (s == "admin") return KeyRole::admin;
  if (s == "project") return KeyRole::project;
  if (s == "viewer") return KeyRole::viewer;
  return std::nullopt;
}

namespace {

std::int64_t to_ms(WallTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
WallTime from_ms(std::int64_t ms) { return WallTime{std::chrono::duration_cast<WallTime::duration>(std::chrono::milliseconds{ms})}; }

std::string iso(WallTime t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Json str_array(const std::vector<std::string>& v) {
  Json a = Json::array();
  for (const auto& s : v) a.push_back(s);
  return a;
}

std::vector<std::string> parse_str_array(const char* text) {
  std::vector<std::string> out;
  if (!text) return out;
  auto j = parse_json(text);
  if (j && j->is_array())
    for (const auto& v : *j)
      if (v.is_string()) out.push_back(v.get<std::string>());
  return out;
}

Error db_error(sqlite3* db, std::string_view what, const std::string& path) {
  Error e;
  e.kind = ErrorKind::io;
  e.message = "key store '" + (path.empty() ? std::string(":memory:") : path) + "': " + std::string(what) + ": " +
              (db ? sqlite3_errmsg(db) : "cannot open");
  return e;
}

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  hint TEXT NOT NULL,
  name TEXT NOT NULL,
  project TEXT NOT NULL,
  org TEXT NOT NULL,
  role TEXT NOT NULL,
  models TEXT NOT NULL,
  configs TEXT NOT NULL,
  rpm INTEGER NOT NULL,
  max_concurrency INTEGER NOT NULL,
  expires_ms INTEGER,
  created_ms INTEGER NOT NULL,
  revoked_ms INTEGER
);
)sql";

constexpr const char* kColumns =
    "id, hash, hint, name, project, org, role, models, configs, rpm, max_concurrency, expires_ms, created_ms, revoked_ms";

}  // namespace

Json ManagedKey::to_json() const {
  Json j{{"id", id},
         {"object", "api_key"},
         {"name", name},
         {"project", project},
         {"org", org},
         {"role", std::string(to_string(role))},
         {"models", str_array(limits.models)},
         {"configs", str_array(limits.configs)},
         {"rpm", limits.rpm},
         {"max_concurrency", limits.max_concurrency},
         {"hint", hint},
         {"created", iso(created)},
         {"expires", expires ? Json(iso(*expires)) : Json(nullptr)},
         {"revoked", revoked ? Json(iso(*revoked)) : Json(nullptr)}};
  return j;
}

namespace {

// SHA256() is OpenSSL 3's EVP_Q_digest: every call fetches the algorithm (a lock and a lookup in
// the provider store) and allocates a digest context, which was two thirds of authenticating a
// request (issue 13). The algorithm is fetched once per process and a context kept per thread.
struct Sha256Ctx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Sha256Ctx() { EVP_MD_CTX_free(ctx); }
};

bool sha256_reused(std::string_view data, unsigned char* out) {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local Sha256Ctx t;
  unsigned int n = 0;
  return md && t.ctx && EVP_DigestInit_ex2(t.ctx, md, nullptr) == 1 && EVP_DigestUpdate(t.ctx, data.data(), data.size()) == 1 &&
         EVP_DigestFinal_ex(t.ctx, out, &n) == 1 && n == SHA256_DIGEST_LENGTH;
}

}  // namespace

std::string hash_api_key(std::string_view secret) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  if (!sha256_reused(secret, md)) SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), md);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(2 * SHA256_DIGEST_LENGTH, '0');
  for (int i = 0; i < SHA256_DIGEST_LENGTH; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 15];
  }
  return out;
}

bool hashes_equal(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string new_api_key_secret() {
  static constexpr char kAlpha[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string out = "mlx-";
  unsigned char buf[64];
  // Rejection sampling keeps the characters uniform (248 = 4 * 62).
  while (out.size() < 4 + 43) {
    if (RAND_bytes(buf, sizeof buf) != 1) std::abort();  // no CSPRNG: nothing safe to do
    for (unsigned char b : buf)
      if (b < 248 && out.size() < 4 + 43) out += kAlpha[b % 62];
  }
  return out;
}

Result<WallTime> parse_key_expiry(std::string_view s, WallTime now) {
  auto bad = [&] {
    return fail(ErrorKind::bad_request,
                "expires must be a date (2026-01-31), a UTC date-time (2026-01-31T12:00:00Z) or a duration (30d, 12h, 90m); got '" +
                    std::string(s) + "'");
  };
  if (s.empty()) return bad();
  // Durations: a number and one unit.
  if (s.back() == 'd' || s.back() == 'h' || s.back() == 'm') {
    std::int64_t n = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size() - 1, n);
    if (r.ec != std::errc{} || r.ptr != s.data() + s.size() - 1 || n <= 0 || n > 3650 * 24 * 60) return bad();
    std::int64_t mult = s.back() == 'd' ? 86400 : s.back() == 'h' ? 3600 : 60;
    return now + std::chrono::seconds{n * mult};
  }
  std::tm tm{};
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  std::string str(s);
  int n = std::sscanf(str.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &sec);
  bool date_only = n == 3 && str.size() == 10;
  bool date_time = n == 6 && str.size() == 20 && str.back() == 'Z';
  if (!date_only && !date_time) return bad();
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return bad();
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string key_list_text(const std::vector<std::string>& v) { return str_array(v).dump(); }
std::vector<std::string> key_list_from_text(const std::string& text) { return parse_str_array(text.c_str()); }

namespace {

class SqliteKeyBackend final : public KeyBackend {
 public:
  ~SqliteKeyBackend() override {
    if (db) sqlite3_close_v2(db);
  }

  std::string path;
  sqlite3* db = nullptr;
  std::mutex mu;
  std::uint64_t own_writes = 0;

  ManagedKey read_row(sqlite3_stmt* st, std::string* hash) {
    auto text = [&](int c) {
      const unsigned char* t = sqlite3_column_text(st, c);
      return t ? std::string(reinterpret_cast<const char*>(t)) : std::string();
    };
    ManagedKey k;
    k.id = text(0);
    if (hash) *hash = text(1);
    k.hint = text(2);
    k.name = text(3);
    k.project = text(4);
    k.org = text(5);
    k.role = key_role_from_string(text(6)).value_or(KeyRole::viewer);  // unknown: least privilege
    k.limits.models = parse_str_array(reinterpret_cast<const char*>(sqlite3_column_text(st, 7)));
    k.limits.configs = parse_str_array(reinterpret_cast<const char*>(sqlite3_column_text(st, 8)));
    k.limits.rpm = sqlite3_column_int(st, 9);
    k.limits.max_concurrency = sqlite3_column_int(st, 10);
    if (sqlite3_column_type(st, 11) != SQLITE_NULL) k.expires = from_ms(sqlite3_column_int64(st, 11));
    k.created = from_ms(sqlite3_column_int64(st, 12));
    if (sqlite3_column_type(st, 13) != SQLITE_NULL) k.revoked = from_ms(sqlite3_column_int64(st, 13));
    return k;
  }

  Result<void> insert(const ManagedKey& k, const std::string& hex) override {
    std::lock_guard lk(mu);
    sqlite3_stmt* st = nullptr;
    std::string sql = std::string("INSERT INTO api_keys (") + kColumns + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)";
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) return fail(db_error(db, "prepare insert", path));
    std::string models = str_array(k.limits.models).dump(), configs = str_array(k.limits.configs).dump();
    std::string role(to_string(k.role));
    sqlite3_bind_text(st, 1, k.id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, hex.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, k.hint.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, k.name.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, k.project.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, k.org.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, role.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 8, models.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 9, configs.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 10, k.limits.rpm);
    sqlite3_bind_int(st, 11, k.limits.max_concurrency);
    if (k.expires) sqlite3_bind_int64(st, 12, to_ms(*k.expires));
    else sqlite3_bind_null(st, 12);
    sqlite3_bind_int64(st, 13, to_ms(k.created));
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return fail(db_error(db, "insert", path));
    ++own_writes;
    return {};
  }

  Result<std::vector<ManagedKey>> list() override {
    std::lock_guard lk(mu);
    sqlite3_stmt* st = nullptr;
    std::string sql = std::string("SELECT ") + kColumns + " FROM api_keys ORDER BY created_ms DESC, id";
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) return fail(db_error(db, "prepare list", path));
    std::vector<ManagedKey> out;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) out.push_back(read_row(st, nullptr));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return fail(db_error(db, "list", path));
    return out;
  }

  Result<std::vector<std::pair<std::string, ManagedKey>>> unrevoked() override {
    std::lock_guard lk(mu);
    sqlite3_stmt* st = nullptr;
    std::string sql = std::string("SELECT ") + kColumns + " FROM api_keys WHERE revoked_ms IS NULL";
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) return fail(db_error(db, "prepare read", path));
    std::vector<std::pair<std::string, ManagedKey>> out;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      std::string hash;
      ManagedKey k = read_row(st, &hash);
      out.emplace_back(std::move(hash), std::move(k));
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return fail(db_error(db, "read", path));
    return out;
  }

  Result<bool> revoke(const std::string& id, WallTime now) override {
    std::lock_guard lk(mu);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "UPDATE api_keys SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL", -1, &st, nullptr) != SQLITE_OK)
      return fail(db_error(db, "prepare revoke", path));
    sqlite3_bind_int64(st, 1, to_ms(now));
    sqlite3_bind_text(st, 2, id.c_str(), -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return fail(db_error(db, "revoke", path));
    bool changed = sqlite3_changes(db) > 0;
    ++own_writes;
    return changed;
  }

  std::uint64_t change_counter() override {
    std::lock_guard lk(mu);
    std::uint64_t v = 0;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &st, nullptr) == SQLITE_OK) {
      if (sqlite3_step(st) == SQLITE_ROW) v = static_cast<std::uint64_t>(sqlite3_column_int64(st, 0));
      sqlite3_finalize(st);
    }
    // data_version only moves for other connections' commits; our own count separately.
    return (v << 32) ^ own_writes;
  }
};

}  // namespace

struct KeyStore::Impl {
  std::string path;  ///< the SQLite file or the PostgreSQL URL
  std::unique_ptr<KeyBackend> backend;
};

KeyStore::KeyStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KeyStore::~KeyStore() = default;
const std::string& KeyStore::path() const noexcept { return impl_->path; }

Result<std::shared_ptr<KeyStore>> KeyStore::open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  if (path.starts_with("postgres://") || path.starts_with("postgresql://")) {
    auto b = open_postgres_key_backend(path);
    if (!b) return fail(b.error());
    impl->path = path;
    impl->backend = std::move(*b);
    return std::shared_ptr<KeyStore>(new KeyStore(std::move(impl)));
  }
  auto lite = std::make_unique<SqliteKeyBackend>();
  lite->path = path == ":memory:" ? std::string() : path;
  impl->path = lite->path;
  const std::string file = lite->path.empty() ? std::string(":memory:") : lite->path;
  int rc = sqlite3_open_v2(file.c_str(), &lite->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) return fail(db_error(lite->db, "open", lite->path));
  sqlite3_busy_timeout(lite->db, 2000);
  char* err = nullptr;
  if (!lite->path.empty()) sqlite3_exec(lite->db, "PRAGMA journal_mode=WAL;", nullptr, nullptr, nullptr);
  if (sqlite3_exec(lite->db, kSchema, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "schema";
    sqlite3_free(err);
    return fail(db_error(lite->db, "create schema (" + m + ")", lite->path));
  }
  impl->backend = std::move(lite);
  return std::shared_ptr<KeyStore>(new KeyStore(std::move(impl)));
}

Result<KeyStore::Created> KeyStore::create(ManagedKey k, WallTime now) {
  Created out;
  out.secret = new_api_key_secret();
  std::string hex = hash_api_key(out.secret);
  k.id = "key_" + hash_api_key(out.secret + "/id").substr(0, 16);  // unrelated to the stored hash
  if (k.name.empty()) k.name = k.id;
  k.created = now;
  k.revoked.reset();
  k.hint = out.secret.substr(0, 8);
  if (auto r = impl_->backend->insert(k, hex); !r) return fail(r.error());
  out.key = std::move(k);
  return out;
}

Result<std::vector<ManagedKey>> KeyStore::list() { return impl_->backend->list(); }

Result<std::vector<std::pair<std::string, ManagedKey>>> KeyStore::active(WallTime now) {
  auto rows = impl_->backend->unrevoked();
  if (!rows) return fail(rows.error());
  std::vector<std::pair<std::string, ManagedKey>> out;
  for (auto& [hash, k] : *rows)
    if (k.active(now)) out.emplace_back(std::move(hash), std::move(k));
  return out;
}

Result<bool> KeyStore::revoke(const std::string& id, WallTime now) { return impl_->backend->revoke(id, now); }

std::uint64_t KeyStore::change_counter() { return impl_->backend->change_counter(); }

}  // namespace modelux
