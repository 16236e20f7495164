// modelux control plane (server component, CMake target modelux::server): the versioned
// store of routing configs, budgets, managed keys and webhooks; the tamper-evident audit log;
// the webhook delivery log; structural diffs; Standard Webhooks signatures.
//
// Three small interfaces, two backends: SQLite (`open_sqlite_control_store`, one machine) and
// PostgreSQL (`open_postgres_control_store`, a fleet of interchangeable instances):
//  - ConfigStore: immutable versions per (kind, name). A write names the version it expects to
//    replace (optimistic concurrency) and carries its audit entry: both commit in ONE
//    transaction, so there is never a version without its audit row or the reverse.
//  - AuditLog: append-only, hash-chained (each entry's hash covers the previous entry's hash);
//    verify() walks the chain and names the first row that was edited, inserted or deleted.
//  - DeliveryLog: webhook secrets and deliveries (pending / delivered / failed) with their
//    retry schedule.
// Both implement the same contract (docs/control-plane.md says what each method must
// guarantee; tests/support/control_store_contract.hpp checks it on both).
//
// Threading: every store object is thread-safe (each backend holds one connection behind a
// mutex). Calls do disk I/O: never call them on an io thread (the proxy runs them on its
// worker pool or on the control plane's own thread). Another process (the CLI) may write the
// same file; change_counter() tells a reader cheaply that it did.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelux/core.hpp"
#include "modelux/wire.hpp"

namespace modelux {

/// The kinds of versioned objects. A budget's name is the budget's name; a key's is its id; a
/// webhook's is its id ("wh_..."); a config's is its slug (without '@').
inline constexpr std::string_view kKindConfig = "config";
inline constexpr std::string_view kKindBudget = "budget";
inline constexpr std::string_view kKindKey = "key";
inline constexpr std::string_view kKindWebhook = "webhook";

/// One immutable version of one object.
struct ObjectVersion {
  std::string kind;          ///< "config" | "budget" | "key" | "webhook"
  std::string name;          ///< slug, budget name, key id, webhook id
  std::int64_t version = 0;  ///< 1, 2, ... per (kind, name); filled in by commit()
  std::string author;        ///< the API key's name ("file" for seeds, "cli" for the CLI)
  WallTime at{};
  std::string message;
  /// create | update | rollback | promote | seed | reseed | delete
  std::string action = "update";
  Json document;             ///< the full document; null for a deletion
  std::string hash;          ///< sha256 of the canonical document; filled in by commit()

  bool deleted() const noexcept { return document.is_null(); }
  /// {"kind","name","version","author","created","message","action","hash"[,"document"]}
  Json to_json(bool with_document = true) const;
};

/// One admin action. `seq`, `prev_hash` and `hash` are filled in by the log.
struct AuditEntry {
  std::int64_t seq = 0;
  WallTime at{};
  std::string actor;        ///< the API key's name (or "file", "cli", "anonymous")
  std::string from;         ///< peer address ("127.0.0.1"), "cli" or "startup"
  std::string action;       ///< "config.update", "config.rollback", "key.create", "webhook.remove", ...
  std::string object;       ///< "config:production", "key:key_ab12", "webhook:wh_..."
  std::string before_hash;  ///< sha256 of the object before ("" when none)
  std::string after_hash;   ///< sha256 of the object after ("" when deleted)
  std::string detail;       ///< the version's message or a short note
  std::string prev_hash;    ///< the previous entry's hash ("" for the first)
  std::string hash;         ///< sha256 over prev_hash and every field above

  Json to_json() const;
};

/// The hash an entry must carry given its fields and prev_hash (what verify() recomputes).
std::string audit_entry_hash(const AuditEntry& e);
/// sha256 hex of the canonical (sorted-key, compact) dump of a document; "" for null.
std::string document_hash(const Json& doc);

struct AuditQuery {
  std::optional<WallTime> since, until;  ///< inclusive bounds on `at`
  std::string actor;                     ///< exact; empty = any
  std::string object;                    ///< exact ("config:production") or a prefix ending in ':' ("config:")
  std::string action;                    ///< exact; empty = any
  std::int64_t after_seq = 0;            ///< cursor: entries with seq > after_seq
  std::size_t limit = 1000;
};

struct AuditVerification {
  bool ok = true;
  std::int64_t checked = 0;            ///< entries walked
  std::int64_t first_bad_seq = 0;      ///< 0 when ok
  std::string problem;                 ///< "entry 7: hash mismatch (edited)", "entry 8 missing (deleted)"
  Json to_json() const;
};

/// Why a commit was refused (Error::code): "version_conflict" (→ 409) or a store fault.
inline constexpr std::string_view kVersionConflict = "version_conflict";

class AuditLog {
 public:
  virtual ~AuditLog() = default;
  /// Appends one entry (seq, prev_hash, hash filled in) and returns it.
  virtual Result<AuditEntry> append(AuditEntry e) = 0;
  /// Entries matching `q`, oldest first.
  virtual Result<std::vector<AuditEntry>> query(const AuditQuery& q) = 0;
  /// Walks the whole chain: every hash recomputed, every seq present, every link intact.
  virtual Result<AuditVerification> verify() = 0;
};

class ConfigStore {
 public:
  virtual ~ConfigStore() = default;
  /// The newest version of every object of `kind` (deleted objects left out), by name.
  virtual Result<std::vector<ObjectVersion>> heads(std::string_view kind) = 0;
  /// The newest version of one object (a deletion included); nullopt when it never existed.
  virtual Result<std::optional<ObjectVersion>> head(std::string_view kind, std::string_view name) = 0;
  virtual Result<std::optional<ObjectVersion>> get(std::string_view kind, std::string_view name, std::int64_t version) = 0;
  /// Versions of one object, newest first, at most `limit`.
  virtual Result<std::vector<ObjectVersion>> history(std::string_view kind, std::string_view name, std::size_t limit) = 0;
  /// Appends `v` as the next version of (v.kind, v.name) and `audit` to the audit log, in one
  /// transaction. `expected`: the version the writer read (0 = the object must not exist);
  /// nullopt = no check. Another head → Error{code = "version_conflict"}. The audit entry's
  /// before/after hashes are filled in here.
  virtual Result<ObjectVersion> commit(ObjectVersion v, std::optional<std::int64_t> expected, AuditEntry audit) = 0;
  /// A small key/value table for the store's own bookkeeping ("seeded_at").
  virtual Result<std::optional<std::string>> meta(std::string_view key) = 0;
  virtual Result<void> set_meta(std::string_view key, std::string_view value) = 0;
  /// Changes whenever the store changes, from this process or another one. Cheap.
  virtual std::uint64_t change_counter() = 0;
  /// Backends that hear of other instances' writes (PostgreSQL: LISTEN/NOTIFY and a periodic
  /// counter check) call `on_change` soon after any write, on their own thread (or the
  /// writer's, for this process's writes); it must not block. Returns a handle for unwatch(),
  /// after which `on_change` is not running and never runs again; 0 = this backend never calls
  /// (SQLite: poll change_counter()).
  virtual std::uint64_t watch(std::function<void()> on_change) {
    (void)on_change;
    return 0;
  }
  virtual void unwatch(std::uint64_t id) { (void)id; }
};

/// A webhook delivery: one event to one endpoint, with its retry state.
struct WebhookDelivery {
  std::string id;           ///< "msg_<hex>": the webhook-id header (same on every retry)
  std::string webhook_id;
  std::string event;        ///< "config.changed"
  std::string payload;      ///< the exact body sent
  std::string status = "pending";  ///< pending | delivered | failed (gave up)
  int attempts = 0;
  WallTime created{};
  WallTime next_attempt{};
  std::optional<WallTime> delivered;
  int last_status = 0;      ///< HTTP status of the last attempt (0 = no answer)
  std::string last_error;

  Json to_json(bool with_payload = false) const;
};

class DeliveryLog {
 public:
  virtual ~DeliveryLog() = default;
  /// The signing secret of a webhook ("whsec_<base64>"); secrets live outside the versioned
  /// documents so that no version, diff or audit entry ever holds one.
  virtual Result<void> set_webhook_secret(std::string_view webhook_id, std::string_view secret) = 0;
  virtual Result<std::optional<std::string>> webhook_secret(std::string_view webhook_id) = 0;
  /// Every stored secret (to register them with the scrubber at start).
  virtual Result<std::vector<std::string>> all_webhook_secrets() = 0;
  virtual Result<void> insert_delivery(const WebhookDelivery& d) = 0;
  virtual Result<void> update_delivery(const WebhookDelivery& d) = 0;
  virtual Result<std::optional<WebhookDelivery>> delivery(std::string_view id) = 0;
  /// Newest first; `webhook_id` empty = every webhook.
  virtual Result<std::vector<WebhookDelivery>> deliveries(std::string_view webhook_id, std::size_t limit) = 0;
  /// Pending deliveries whose next attempt is due at `now`, oldest first.
  virtual Result<std::vector<WebhookDelivery>> due_deliveries(WallTime now, std::size_t limit) = 0;
};

/// The three interfaces of one backend (the SQLite backend is one object behind all three).
struct ControlStore {
  std::shared_ptr<ConfigStore> configs;
  std::shared_ptr<AuditLog> audit;
  std::shared_ptr<DeliveryLog> deliveries;
  std::string path;  ///< "" = in memory
};

/// Opens (creating) the SQLite control store; "" or ":memory:" = in memory.
Result<ControlStore> open_sqlite_control_store(const std::string& path);
/// Opens the PostgreSQL control store at `url` ("postgres://user:pass@host:5432/db", any libpq
/// URI or "host=… dbname=…" string), creating its tables on first use. Every instance opened
/// on the same database shares versions, audit log, webhooks and deliveries; a write by any of
/// them reaches the others' watch() callbacks through LISTEN/NOTIFY, and `reconcile` is how
/// often a missed notification is healed (a counter row compared). Error (kind io) when the
/// database cannot be reached.
Result<ControlStore> open_postgres_control_store(const std::string& url, Millis reconcile = Millis{2000});
/// PostgreSQL for a "postgres://" or "postgresql://" URL, else SQLite at that path.
Result<ControlStore> open_control_store(const std::string& path_or_url, Millis reconcile = Millis{2000});

struct ManagedKey;  // modelux/keys.hpp

/// A managed key was created or revoked: its secret-free document (ManagedKey::to_json) becomes
/// the key's next version (action "create" / "revoke") with its audit entry ("key.create" /
/// "key.revoke", object "key:<id>"), in one transaction. The proxy's API and the CLI both
/// record every key change through this, so none goes unaudited.
Result<ObjectVersion> commit_key_change(ConfigStore& store, const ManagedKey& key, bool revoked, const std::string& actor,
                                        const std::string& from, WallTime at);

// ---- diffs -------------------------------------------------------------------------------

/// A structural diff from `a` to `b` as JSON Patch (RFC 6902) operations: add / remove /
/// replace with JSON Pointer paths. Objects are compared key by key, arrays index by index
/// (a changed length adds or removes at the end). Applying it to `a` yields `b`.
Json json_diff(const Json& a, const Json& b);
/// A line diff of the two documents pretty-printed (2-space indent, sorted keys), in unified
/// format with `---`/`+++` headers named `a_name`/`b_name` and 3 lines of context.
std::string text_diff(const Json& a, const Json& b, std::string_view a_name, std::string_view b_name);

// ---- webhooks (Standard Webhooks, https://www.standardwebhooks.com) -------------------------

/// Events a webhook may subscribe to.
inline constexpr std::string_view kWebhookEvents[] = {
    "budget.alert",   "budget.blocked",    "budget.downgraded", "config.changed", "config.rolled_back", "config.promoted",
    "breaker.opened", "breaker.closed",    "key.created",       "key.revoked",    "spend.anomaly"};
bool known_webhook_event(std::string_view e) noexcept;

/// Validates a webhook's settings {"url" (http or https), "events" (names above or "*";
/// default every event), "description", "enabled" (default true)}; returns them normalised.
/// Errors name the JSON path.
Result<Json> normalize_webhook_spec(const Json& spec);

/// A new secret: "whsec_" + base64 of 32 random bytes.
std::string new_webhook_secret();
/// The webhook-signature header value: "v1," + base64(HMAC-SHA256(key, id + "." + timestamp +
/// "." + body)); the key is the base64-decoded part after "whsec_" (the whole string when it
/// has no such prefix). Error for a secret that is not valid base64.
Result<std::string> sign_webhook(std::string_view secret, std::string_view id, std::int64_t timestamp, std::string_view body);
/// Verifies a received webhook: `signature_header` may list several space-separated
/// "v1,<sig>" entries (any match is enough, compared in constant time); the timestamp must be
/// within `tolerance_s` of `now_s`. Error (kind auth) saying why when it does not verify.
Result<void> verify_webhook(std::string_view secret, std::string_view id, std::string_view timestamp,
                            std::string_view body, std::string_view signature_header, std::int64_t now_s,
                            std::int64_t tolerance_s = 300);

}  // namespace modelux
