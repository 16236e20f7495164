// modelux keys (server component): roles of modelux API keys and the store of managed keys
// (created at run time through the admin API or `modelux keys`, as opposed to the keys in the
// config file).
//
// Only the SHA-256 of a secret is stored; the secret is returned once, by create(). Lookups
// hash the presented key and find it by hash (the comparison of the hashes is constant-time),
// so the store never holds anything that authenticates.
//
// Two engines behind one KeyStore: a SQLite file (one machine), or PostgreSQL for a fleet
// (open() with a "postgres://" URL): every instance on that database shares the keys, and a
// create or revoke on one reaches the others through LISTEN/NOTIFY (docs/control-plane.md).
//
// Threading: KeyStore is thread-safe (one connection behind a mutex). Another process (the
// CLI, another instance) may write the same store; change_counter() tells a reader cheaply
// that it did.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "modelux/core.hpp"
#include "modelux/wire.hpp"

namespace modelux {

/// What a modelux API key may do.
///  - admin: everything (configs, keys, every project's traces and budgets, any x-modelux-project);
///  - project (default): the data plane for its own project, and reading its project's traces
///    and budgets;
///  - viewer: read-only (models, configs, its own project's traces and budgets); no data plane.
enum class KeyRole : std::uint8_t { admin, project, viewer };
std::string_view to_string(KeyRole r) noexcept;
std::optional<KeyRole> key_role_from_string(std::string_view s) noexcept;

/// Per-key restrictions beyond the role (config keys and managed keys alike).
struct KeyLimits {
  std::vector<std::string> models;   ///< catalog models the key may ask for; empty = any
  std::vector<std::string> configs;  ///< "@slug" configs it may use (slugs without '@'); empty = any
  int rpm = 0;                       ///< data-plane requests per minute; 0 = unlimited
  int max_concurrency = 0;           ///< data-plane requests in flight; 0 = unlimited
};

/// A managed key as stored (never with its secret).
struct ManagedKey {
  std::string id;       ///< "key_<hex>": public handle (list, revoke, traces' api_key_id)
  std::string name;     ///< free text; defaults to the id
  std::string project;
  std::string org;
  KeyRole role = KeyRole::project;
  KeyLimits limits;
  std::optional<WallTime> expires;
  WallTime created{};
  std::optional<WallTime> revoked;
  std::string hint;     ///< the secret's first 8 characters ("mlx-AbCd"), to recognise it

  bool active(WallTime now) const noexcept { return !revoked && (!expires || now < *expires); }
  Json to_json() const;
};

/// SHA-256 of a presented secret, hex. What the store keys on.
std::string hash_api_key(std::string_view secret);
/// Constant-time equality of two equally long hashes.
bool hashes_equal(std::string_view a, std::string_view b) noexcept;
/// A new secret: "mlx-" + 43 base62 characters (256 bits from the OS CSPRNG).
std::string new_api_key_secret();
/// Parses --expires / "expires": an RFC 3339 date or date-time ("2026-01-31",
/// "2026-01-31T12:00:00Z") or a duration from `now` ("30d", "12h", "90m").
Result<WallTime> parse_key_expiry(std::string_view s, WallTime now);

class KeyStore {
 public:
  /// Opens (creating) the store; "" or ":memory:" = in memory (keys live until exit); a
  /// "postgres://" or "postgresql://" URL = the fleet's shared PostgreSQL store.
  static Result<std::shared_ptr<KeyStore>> open(const std::string& path);
  ~KeyStore();
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;

  struct Created {
    ManagedKey key;
    std::string secret;  ///< shown once; only its hash is stored
  };
  /// Stores a new key (id, created and hint are filled in). Error for a bad project or role.
  Result<Created> create(ManagedKey spec, WallTime now);
  /// Every key, newest first (revoked ones included, marked).
  Result<std::vector<ManagedKey>> list();
  /// Marks the key revoked. false when there is no such id (or it was already revoked).
  Result<bool> revoke(const std::string& id, WallTime now);
  /// The keys that can authenticate at `now`, each with its secret's hash.
  Result<std::vector<std::pair<std::string, ManagedKey>>> active(WallTime now);
  /// Changes whenever the store changes, from this process or another one (SQLite's
  /// data_version plus this connection's own writes: one pragma; PostgreSQL: an atomic the
  /// listener thread bumps, no query).
  std::uint64_t change_counter();
  const std::string& path() const noexcept;

  struct Impl;

 private:
  explicit KeyStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace modelux
