// The proxy's control plane: every admin write (routing configs, budgets, managed keys,
// webhooks) becomes a stored version plus an audit entry and, where it applies, goes live on
// the Router; events go out as signed webhooks; a reconcile loop applies versions written by
// another process (the CLI on the same file, another instance on the same PostgreSQL) to the
// running Router, woken at once by the store's watch() where it has one.
//
// Threading: the write methods do store I/O and compiles: call them on the worker pool (or
// any non-io thread). Writes of this process are serialised by one mutex (check the expected
// version, compile, commit). emit() never blocks: it pushes onto a bounded queue (drops are
// counted). One background thread (start()) turns events into deliveries, sends due
// deliveries (with its own io_context and HTTP client, so a slow receiver never touches a
// request), reconciles the Router with the store, and watches budgets, breakers and spend.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "modelux/control.hpp"
#include "modelux/keys.hpp"
#include "modelux/router.hpp"

namespace modelux::proxy {

class KeyRegistry;

/// spend.anomaly: per budget ledger, spend is summed into buckets of `bucket`; the event fires
/// when the newest complete bucket's spend is above `factor` x the mean of the up to
/// `baseline_buckets` buckets before it AND above `min_usd` (a floor against noise near zero),
/// once there are at least `min_buckets` of history. It fires again only after a bucket back
/// under the threshold.
struct SpendAnomalyOptions {
  Millis bucket{60'000};
  std::size_t baseline_buckets = 60;
  std::size_t min_buckets = 10;
  double factor = 5.0;
  double min_usd = 1.0;
};

struct ControlOptions {
  std::string path;                       ///< SQLite file, or a postgres:// URL (a fleet); "" = in memory
  Millis reconcile{1000};                 ///< how often the store is checked for outside writes (PostgreSQL: the heal for missed notifications)
  Millis retry_base{5000};                ///< first retry delay; doubles per attempt (max 6 h)
  Millis give_up{24LL * 3600 * 1000};     ///< a delivery is abandoned this long after its event
  Millis delivery_timeout{10'000};
  std::size_t queue_capacity = 10'000;    ///< events waiting for the control thread
  SpendAnomalyOptions anomaly;
};

/// Who did it and from where (the audit log's actor and from).
struct Actor {
  std::string name;
  std::string from;
};

struct ControlStats {
  std::uint64_t events = 0, events_dropped = 0, delivered = 0, delivery_failures = 0, gave_up = 0, reconciled = 0;
};

class ControlPlane {
 public:
  static Result<std::unique_ptr<ControlPlane>> open(ControlOptions options);
  ~ControlPlane();

  /// Before the Router exists. First start (the store holds nothing): every routing config and
  /// budget of the file becomes version 1 (action "seed"). Afterwards the store wins: its
  /// heads replace the file's, and only slugs/budgets the store never saw are seeded from the
  /// file. `reseed`: the file wins once, each differing document recorded as a "reseed" version.
  Result<void> seed(Config& cfg, bool reseed, const Actor& actor);
  /// After the Router exists: pins its config versions to the store's and starts the thread.
  Result<void> attach(Router& router, KeyRegistry* keys);
  void stop();

  // ---- writes (worker pool) -----------------------------------------------------------------
  Result<ObjectVersion> put_config(const std::string& slug, const Json& doc, std::optional<std::int64_t> expected, const Actor& who,
                                   std::string message);
  Result<ObjectVersion> rollback_config(const std::string& slug, std::int64_t to, std::optional<std::int64_t> expected,
                                        const Actor& who, std::string message);
  /// `from`'s version `version` (its head when 0) becomes `to`'s next version.
  Result<ObjectVersion> promote_config(const std::string& from, std::int64_t version, const std::string& to,
                                       std::optional<std::int64_t> expected, const Actor& who, std::string message);
  /// Budget definitions are validated like the file's "budgets" entries; a committed change
  /// (put or delete) is applied at once to the running BudgetManager (BudgetManager::update:
  /// spend of unchanged identities kept) and on the other instances when they reconcile. An
  /// instance started without any budget runs no BudgetManager: there the change applies at the
  /// next start (docs/control-plane.md).
  Result<ObjectVersion> put_budget(const std::string& name, Json doc, std::optional<std::int64_t> expected, const Actor& who,
                                   std::string message);
  Result<ObjectVersion> delete_budget(const std::string& name, std::optional<std::int64_t> expected, const Actor& who);
  /// Spend reset: a new version of the budget (same document, action "reset", audited as
  /// budget.reset) and BudgetManager::reset on this instance; every other instance sharing the
  /// store applies it when it reconciles. not_found when the budget has no live definition,
  /// conflict when it is not running here (definitions apply at the next start).
  Result<ObjectVersion> reset_budget(const std::string& name, std::optional<std::int64_t> expected, const Actor& who,
                                     std::string message);
  struct NewWebhook {
    ObjectVersion version;
    std::string secret;
  };
  Result<NewWebhook> add_webhook(const Json& spec, const Actor& who);
  Result<ObjectVersion> update_webhook(const std::string& id, const Json& spec, std::optional<std::int64_t> expected, const Actor& who);
  Result<ObjectVersion> remove_webhook(const std::string& id, std::optional<std::int64_t> expected, const Actor& who);
  Result<WebhookDelivery> redeliver(const std::string& delivery_id, const Actor& who);
  /// A managed key was created or revoked: its (secret-free) document becomes a version, an
  /// audit entry, and a key.created / key.revoked event.
  Result<void> record_key(const ManagedKey& key, bool revoked, const Actor& who);

  /// Queues an event for every subscribed webhook. Never blocks; drops (counted) when full.
  void emit(std::string_view event, Json data);
  /// Sends due deliveries now (tests and the CLI's direct mode); normally the thread does it.
  void deliver_due();

  /// A copy of the attached Router's config (providers, catalog, budgets, every slug's routing)
  /// taken under the write lock, which every live routing change of this process holds: a
  /// reader on a worker (replay) never races a PUT, rollback or reconcile. Empty if detached.
  Config router_config();
  /// True when `doc` is the definition of budget `name` running in this instance's
  /// BudgetManager (GET /v1/budgets/{name} "live").
  bool budget_running(const std::string& name, const Json& doc);

  ConfigStore& configs() { return *store_.configs; }
  AuditLog& audit() { return *store_.audit; }
  DeliveryLog& deliveries() { return *store_.deliveries; }
  const ControlStore& store() const { return store_; }
  ControlStats stats() const;

  /// Validates a webhook spec {"url", "events", "description", "enabled"}; the normalised document.
  static Result<Json> check_webhook_spec(const Json& spec);

 private:
  explicit ControlPlane(ControlOptions o, ControlStore s);
  void run();
  void tick_watchers(WallTime wall);
  void reconcile();
  void fan_out(const std::string& event, const Json& data, WallTime now);
  void attempt(WebhookDelivery d, WallTime now);
  Result<ObjectVersion> apply_config(const std::string& slug, const Json& doc, std::optional<std::int64_t> expected, const Actor& who,
                                     std::string message, std::string action, std::string audit_action, Json extra_event);
  WallTime wall_now() const;

  ControlOptions opts_;
  ControlStore store_;
  Router* router_ = nullptr;
  KeyRegistry* keys_ = nullptr;
  std::mutex write_mu_;

  std::mutex q_mu_;
  std::condition_variable q_cv_;
  std::deque<std::pair<std::string, Json>> queue_;
  bool stop_ = false;
  bool changed_ = false;        ///< the store's watch() fired (guarded by q_mu_)
  std::uint64_t watch_id_ = 0;
  std::thread thread_;
  std::atomic<std::uint64_t> events_{0}, dropped_{0}, delivered_{0}, failures_{0}, gave_up_{0}, reconciled_{0};
  std::uint64_t seen_counter_ = 0;

  // Watchers' memory (control thread only).
  std::map<std::string, std::int64_t> budget_seen_;  ///< budget name → head version applied here (under write_mu_)
  std::map<std::string, Json> budget_docs_;           ///< budget definitions running here (under write_mu_)
  /// Applies the store's budget heads to the Router's BudgetManager when they differ from
  /// budget_docs_. Caller holds write_mu_. False when there is no manager or the update failed.
  bool apply_budgets_locked();
  std::set<std::string> fired_;                      ///< budget alerts / blocks / downgrades already sent
  std::map<std::string, std::pair<std::string, std::int64_t>> breakers_;  ///< BreakerMemory: target → (state, trips)
  struct SpendSeries {
    double last_spent = -1;
    double bucket_sum = 0;
    std::deque<double> history;
    bool firing = false;
  };
  std::map<std::string, SpendSeries> spend_;
  Instant bucket_start_{};
  Instant last_reconcile_{};

  struct Sender;
  std::unique_ptr<Sender> sender_;
};

/// What the breaker watcher remembers per target: (breaker state, trips).
using BreakerMemory = std::map<std::string, std::pair<std::string, std::int64_t>>;
/// breaker.opened / breaker.closed events from one HealthRegistry::state_json, given what the
/// previous look saw (`seen` is updated). A trip is a rise of `trips` or a closed breaker seen
/// open; a breaker that tripped and closed between two looks yields both events.
std::vector<std::pair<std::string, Json>> breaker_events(const Json& health_state, BreakerMemory& seen);

/// The ETag/If-Match form of a version: "\"3\"". Parses "3", "\"3\"" and W/"3".
std::string version_etag(std::int64_t v);
std::optional<std::int64_t> parse_if_match(std::string_view h);

}  // namespace modelux::proxy
