#include "server/auth.hpp"

#include "modelux/scrub.hpp"

namespace modelux::proxy {

std::string_view presented_key(const Headers& headers) {
  if (const std::string* a = find_header(headers, "authorization")) {
    std::string_view v = *a;
    if (v.size() > 7 && (v.starts_with("Bearer ") || v.starts_with("bearer "))) {
      v.remove_prefix(7);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
      return v;
    }
  }
  if (const std::string* k = find_header(headers, "x-api-key")) return *k;
  return {};
}

KeyRegistry::KeyRegistry(const std::vector<ApiKeyConfig>& config_keys, std::shared_ptr<KeyStore> store, const Clock& clock)
    : clock_(clock), store_(std::move(store)) {
  for (const auto& k : config_keys) {
    auto id = std::make_shared<KeyIdentity>();
    id->id = k.name;
    id->hash = hash_api_key(k.key);
    id->project = k.project;
    id->org = k.org;
    id->role = k.role;
    id->limits = k.limits;
    id->expires = k.expires;
    id->usage = usage_for(k.name);
    add_secret(k.key);  // a modelux key never leaves the process either
    config_keys_.emplace(id->hash, std::move(id));
  }
  reload();
}

std::shared_ptr<KeyUsage> KeyRegistry::usage_for(const std::string& id) {
  std::lock_guard lk(usage_mu_);
  auto& u = usage_[id];
  if (!u) u = std::make_shared<KeyUsage>();
  return u;
}

void KeyRegistry::reload() {
  if (!store_) return;
  std::lock_guard lk(reload_mu_);
  std::uint64_t v = store_->change_counter();
  auto rows = store_->active(clock_.wall_now());
  if (!rows) {
    // Keep the last good snapshot: a transient lock, or PostgreSQL down, must not open or close
    // every key. Requests try again at most once a second, so a store that is down does not
    // cost every request a failed connect.
    retry_after_.store(clock_.now().time_since_epoch().count() + std::chrono::duration_cast<Instant::duration>(Millis{1000}).count());
    return;
  }
  auto map = std::make_shared<Map>();
  for (auto& [hash, k] : *rows) {
    auto id = std::make_shared<KeyIdentity>();
    id->id = k.id;
    id->hash = hash;
    id->project = k.project;
    id->org = k.org;
    id->role = k.role;
    id->limits = k.limits;
    id->expires = k.expires;
    id->usage = usage_for(k.id);
    map->emplace(hash, std::move(id));
  }
  managed_.store(std::shared_ptr<const Map>(std::move(map)));
  seen_version_.store(v);
}

std::shared_ptr<const KeyRegistry::Map> KeyRegistry::managed_snapshot() {
  if (store_ && store_->change_counter() != seen_version_.load() && clock_.now().time_since_epoch().count() >= retry_after_.load()) reload();
  return managed_.load();
}

bool KeyRegistry::open_access() { return config_keys_.empty() && managed_snapshot()->empty(); }

std::variant<Caller, AuthFailure> KeyRegistry::authenticate(std::string_view secret) {
  if (secret.empty()) return AuthFailure::missing;
  const std::string h = hash_api_key(secret);
  std::shared_ptr<const KeyIdentity> found;
  if (auto it = config_keys_.find(h); it != config_keys_.end()) found = it->second;
  else {
    auto snap = managed_snapshot();
    if (auto m = snap->find(h); m != snap->end()) found = m->second;
  }
  // The map finds by hash; the final comparison is constant-time on the digests.
  if (!found || !hashes_equal(found->hash, h)) return AuthFailure::unknown;
  if (found->expires && clock_.wall_now() >= *found->expires) return AuthFailure::expired;
  Caller c;
  c.role = found->role;
  c.project = found->project;
  c.key = std::move(found);
  return c;
}

std::optional<Millis> KeyRegistry::take_rate_token(const KeyIdentity& k) {
  if (k.limits.rpm <= 0) return std::nullopt;
  KeyUsage& u = *k.usage;
  const double cap = k.limits.rpm, per_ms = cap / 60000.0;
  Instant now = clock_.now();
  std::lock_guard lk(u.mu);
  if (u.tokens < 0) u.tokens = cap;
  else u.tokens = std::min(cap, u.tokens + per_ms * std::chrono::duration<double, std::milli>(now - u.last).count());
  u.last = now;
  if (u.tokens >= 1.0) {
    u.tokens -= 1.0;
    return std::nullopt;
  }
  return Millis{static_cast<std::int64_t>((1.0 - u.tokens) / per_ms) + 1};
}

}  // namespace modelux::proxy
