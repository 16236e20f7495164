// Where managed keys are kept: the storage half of KeyStore (keys.hpp), one implementation per
// engine. SQLite (keys.cpp) for one machine; PostgreSQL (keys_pg.cpp) for a fleet, so a key
// created on one instance authenticates on every other and a revocation reaches them all.
//
// Threading: implementations are thread-safe (one connection behind a mutex) and do I/O.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "modelux/keys.hpp"

namespace modelux {

class KeyBackend {
 public:
  virtual ~KeyBackend() = default;
  /// Stores a new key with its secret's hash.
  virtual Result<void> insert(const ManagedKey& k, const std::string& hash) = 0;
  /// Every key, newest first.
  virtual Result<std::vector<ManagedKey>> list() = 0;
  /// Marks the key revoked; false when there was no such unrevoked key.
  virtual Result<bool> revoke(const std::string& id, WallTime now) = 0;
  /// The unrevoked keys with their hashes (expiry is checked by the caller).
  virtual Result<std::vector<std::pair<std::string, ManagedKey>>> unrevoked() = 0;
  /// Changes whenever the store changes, from this process or another one. Cheap.
  virtual std::uint64_t change_counter() = 0;
};

/// The PostgreSQL key store at `url` (keys_pg.cpp).
Result<std::unique_ptr<KeyBackend>> open_postgres_key_backend(const std::string& url);

// The row form shared by both engines: string lists as JSON text, times as ms since the epoch.
std::string key_list_text(const std::vector<std::string>& v);
std::vector<std::string> key_list_from_text(const std::string& text);

}  // namespace modelux
