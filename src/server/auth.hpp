// Who is calling: modelux API keys (config file + managed store) → a Caller with a role, a
// project and per-key limits; the request-rate and concurrency limits per key.
//
// Threading: KeyRegistry::authenticate is called from any io thread. Config keys are an
// immutable map built at start; managed keys are an immutable snapshot swapped atomically
// whenever the store's change counter moves (a revocation by the admin API or by the CLI in
// another process is seen on the next request). Per-key usage counters are shared by every
// snapshot so a reload does not reset them.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>

#include "modelux/keys.hpp"
#include "modelux/server.hpp"

namespace modelux::proxy {

/// Live usage of one key: a token bucket for rpm and an in-flight count.
struct KeyUsage {
  std::mutex mu;
  double tokens = -1;  // -1: not started (full bucket)
  Instant last{};
  std::atomic<int> in_flight{0};
};

/// One key as the proxy knows it.
struct KeyIdentity {
  std::string id;       ///< traces' api_key_id: the config key's name or the managed key's id
  std::string hash;     ///< SHA-256 hex of the secret
  std::string project, org;
  KeyRole role = KeyRole::project;
  KeyLimits limits;
  std::optional<WallTime> expires;
  std::shared_ptr<KeyUsage> usage;
};

/// The authenticated caller of one request.
struct Caller {
  std::shared_ptr<const KeyIdentity> key;  ///< null when the proxy runs without keys
  KeyRole role = KeyRole::admin;
  std::string project;

  bool admin() const noexcept { return role == KeyRole::admin; }
  /// Non-admin callers only see their own project's data.
  bool sees_project(std::string_view p) const noexcept { return admin() || p == project; }
};

/// Why a key was refused (→ 401).
enum class AuthFailure : std::uint8_t { missing, unknown, expired, store_error };

class KeyRegistry {
 public:
  KeyRegistry(const std::vector<ApiKeyConfig>& config_keys, std::shared_ptr<KeyStore> store, const Clock& clock);

  /// True when no key is configured and the store holds none: the proxy runs open (loopback only).
  bool open_access();
  /// Looks the presented secret up by its hash (compared in constant time).
  std::variant<Caller, AuthFailure> authenticate(std::string_view secret);
  KeyStore* store() noexcept { return store_.get(); }
  /// Re-reads the managed keys now (after a write through this process).
  void reload();

  /// Takes one request token from the key's rpm bucket; nullopt = allowed, else the wait.
  std::optional<Millis> take_rate_token(const KeyIdentity& k);

 private:
  using Map = std::unordered_map<std::string, std::shared_ptr<const KeyIdentity>>;
  std::shared_ptr<const Map> managed_snapshot();
  std::shared_ptr<KeyUsage> usage_for(const std::string& id);

  const Clock& clock_;
  Map config_keys_;
  std::shared_ptr<KeyStore> store_;
  std::mutex reload_mu_;
  std::atomic<std::uint64_t> seen_version_{~0ULL};
  std::atomic<Instant::rep> retry_after_{0};  ///< after a failed reload, requests wait until then to try again
  std::atomic<std::shared_ptr<const Map>> managed_{std::make_shared<const Map>()};
  std::mutex usage_mu_;
  std::unordered_map<std::string, std::shared_ptr<KeyUsage>> usage_;
};

/// The presented key: "Authorization: Bearer <key>" or "x-api-key: <key>"; empty when none.
std::string_view presented_key(const Headers& headers);

}  // namespace modelux::proxy
