// Kept responses: a request that opts in (header `x-modelux-keep: 1`, or its routing config's
// `keep_responses: {ttl_s}`) is not cancelled when its client hangs up. The upstream call runs
// to the end and the completed answer (for a stream: the accumulated final response, in the
// ingress's non-stream shape) is stored with a TTL, for `GET /v1/kept/{request_id}`. Only the
// key that made the request, a key of the same project, or an admin key may read it; anyone
// else gets 404, as for an unknown id. The default is unchanged: a hang-up cancels.
//
// Storage is SQLite (a file by default, see KeepConfig) and is touched only from the worker
// pool: the io thread registers the request in an in-memory table and hands the finished
// answer to a pool thread, which writes it and then drops the in-memory entry (so a reader
// never sees a gap between "in progress" and "stored").
//
// Threading: KeptResponses is shared by every connection; its in-memory table is guarded by a
// mutex held for a map operation only (and only kept requests touch it); KeptStore methods
// block on SQLite and run on the worker pool. A KeptRequest belongs to its request's handler.
#pragma once

#include <expected>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "server/ingress.hpp"

namespace modelux::proxy {

/// One stored answer.
struct KeptRecord {
  std::string id;       ///< the request id
  std::string key_id;   ///< the key that made the request ("" without keys)
  std::string project;  ///< the project it was charged to
  int status = 200;     ///< the HTTP status the client would have got
  std::string content_type = "application/json";
  std::string body;     ///< the answer (or error) in the ingress's non-stream shape
  std::int64_t created_ms = 0, expires_ms = 0;  ///< Unix ms
};

/// The SQLite table of kept answers. Every method blocks: call it on the worker pool.
class KeptStore {
 public:
  /// `path` "" = in memory. The file is opened on first use.
  explicit KeptStore(std::string path);
  ~KeptStore();
  KeptStore(const KeptStore&) = delete;
  KeptStore& operator=(const KeptStore&) = delete;
  /// Stores `r` (replacing nothing: an id is written once) and deletes expired rows.
  Result<void> put(const KeptRecord& r, std::int64_t now_ms);
  /// The record, or nullopt when unknown or expired at `now_ms`.
  Result<std::optional<KeptRecord>> get(std::string_view id, std::int64_t now_ms);

 private:
  Result<void> open_locked();
  std::string path_;
  std::mutex mu_;
  struct Db;
  std::unique_ptr<Db> db_;
};

/// The proxy's kept responses: settings, the in-flight table and the store.
class KeptResponses {
 public:
  KeptResponses(KeepConfig cfg, std::string path, const Clock& clock);
  const KeepConfig& config() const noexcept { return cfg_; }
  KeptStore& store() noexcept { return store_; }
  std::int64_t now_ms() const noexcept;

  struct Owner {
    std::string key_id, project;
  };
  /// Registers a request in flight; false when the id is already in flight.
  bool begin(const std::string& id, Owner owner);
  /// Its owner while in flight.
  std::optional<Owner> in_flight(const std::string& id) const;
  void end(const std::string& id);

  std::atomic<std::uint64_t> kept{0}, stored{0}, store_errors{0}, clients_left{0};

 private:
  KeepConfig cfg_;
  const Clock& clock_;
  KeptStore store_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Owner> in_flight_;
};

/// One request that is kept: made by the ingress when the request opts in.
class KeptRequest {
 public:
  /// Decides whether this request is kept (x-modelux-keep header, else the routing config's
  /// keep_responses) and registers it: nullptr when it is not kept. A client-chosen id
  /// (x-modelux-request-id) replaces ctx.request_id, so the client knows it before any byte
  /// comes back; it must be new. Errors: a bad header value, a bad or taken id.
  static net::awaitable<std::expected<std::shared_ptr<KeptRequest>, Refusal>> begin(RouteCtx& c, const ChatRequest& creq,
                                                                                      CallContext& ctx);
  ~KeptRequest();
  KeptRequest(KeptResponses& kr, WorkerPool& pool, KeptRecord rec) : kr_(kr), pool_(pool), rec_(std::move(rec)) {}

  /// Stream chunks, folded into the final response.
  void add(const ChatChunk& c) { acc_.add(c); }
  ChatResponse accumulated() const { return acc_.finish(); }
  /// The client went away: from now on nothing is written to it, the request goes on.
  void client_left() noexcept;
  bool client_gone() const noexcept { return gone_; }
  /// Hands the final answer to the worker pool, which stores it. Once.
  void store(int status, std::string body);

 private:
  KeptResponses& kr_;
  WorkerPool& pool_;
  KeptRecord rec_;
  ChunkAccumulator acc_;
  bool gone_ = false, stored_ = false;
};

/// The sink of a kept stream: folds every chunk into the final response and hands it to
/// `inner` (the ingress's writer) until the client leaves; it never cancels the request.
/// `inner` is called before any suspension, so the relay's RelayedEvent::take still works.
AsyncChunkSink keep_stream(std::shared_ptr<KeptRequest> kept, AsyncChunkSink inner);

/// GET /v1/kept/{request_id}
net::awaitable<std::optional<Reply>> get_kept(RouteCtx& c);

}  // namespace modelux::proxy
