// The Tracer: hot-path handoff of decision traces to a background SQLite writer.
//
// Queue: a bounded multi-producer ring of pointers (Vyukov's bounded MPMC queue, used with one
// consumer). A producer claims a slot with one CAS on the enqueue counter, moves the trace into
// a node and publishes it with a release store of the slot's sequence number: no lock, no
// syscall. Nodes come from a second ring of recycled nodes (one more CAS); only while that
// pool is still growing does submit allocate, one fixed-size node. A full ring drops the newest trace and counts
// it (spdlog's "discard new"). The producer wakes the writer only once every batch_size
// submissions, so the condition variable costs nothing per call; otherwise the writer wakes
// every flush_interval. Cost per submit: 2 CAS + the member moves.
//
// Writer: pops up to batch_size traces, applies body capture/redaction and secret scrubbing,
// and writes them plus the persisted counters in one transaction. A failed batch (locked or
// broken file) is retried up to write_retries wake-ups, then dropped and counted; meanwhile
// submit() keeps accepting until the ring fills, so the router never notices.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#include "modelux/trace.hpp"
#include "modelux/otlp.hpp"
#include "modelux/scrub.hpp"

namespace modelux {

namespace {

std::size_t round_up_pow2(std::size_t n) {
  std::size_t p = 2;
  while (p < n) p <<= 1;
  return p;
}

// Vyukov's bounded MPMC queue of DecisionTrace pointers. claim()/publish() split the push so a
// producer learns the queue is full before it does any work.
//
// The cells are mapped lazily: a cell stores its sequence number minus its index and minus the
// ring's base, so the initial state (sequence = base + index) is all zeros and the array can
// come straight from an anonymous mapping, whose pages stay unallocated until a position first
// reaches them. An idle proxy's 65,536-slot ring costs nothing instead of 1 MB; a burst of N
// traces touches N x 16 bytes of it, and positions only grow, so a busy ring ends with all of
// it resident.
//
// rebase() gives those pages back once the ring is empty: it moves both positions to the next
// multiple of the capacity above them (the new base) and drops the cells' pages, which then
// read as zeros, i.e. "free for base + index": exactly the state of every cell of an empty
// ring at the new base. It runs only on the ring's one consumer (the writer) and only when
// every claimed position was consumed; it holds producers off by swapping the enqueue position
// for kLocked (any claim that reads it sees a positive difference and reloads). Positions stay
// monotonic, so a producer that read an old position before the rebase can never complete its
// CAS on it (no ABA), and one that read a stale base or a dropped cell sees a difference that
// makes it reload (a "full" verdict is rechecked against a fresh position). claimed() and
// consumed() count tickets, not positions: they subtract what rebases skipped, read under a
// sequence lock.
class TraceRing {
 public:
  explicit TraceRing(std::size_t capacity) : mask_(round_up_pow2(capacity) - 1), bytes_((mask_ + 1) * sizeof(Cell)) {
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();  // as new[] would
    cells_ = static_cast<Cell*>(p);
  }
  ~TraceRing() {
    while (true) {
      auto r = pop();
      if (!r.first) break;
      delete r.second;
    }
    ::munmap(cells_, bytes_);
  }
  TraceRing(const TraceRing&) = delete;
  TraceRing& operator=(const TraceRing&) = delete;

  /// Claims a slot; false when the ring is full. On success the slot must be published.
  bool claim(std::size_t& pos) noexcept {
    pos = enqueue_.load(std::memory_order_acquire);
    for (;;) {
      const std::size_t i = pos & mask_;
      const std::size_t seq = seq_of(i).load(std::memory_order_acquire) + i + base_.load(std::memory_order_relaxed);
      auto dif = static_cast<std::intptr_t>(seq) - static_cast<std::intptr_t>(pos);
      if (dif == 0) {
        if (enqueue_.compare_exchange_weak(pos, pos + 1, std::memory_order_acquire)) return true;
      } else if (dif < 0) {
        // Full, unless a rebase moved the position since it was read (a stale cell or base).
        const std::size_t now = enqueue_.load(std::memory_order_acquire);
        if (now == pos) return false;
        pos = now;
      } else {
        if (pos >= kLocked) std::this_thread::yield();  // a rebase is dropping the pages: microseconds
        pos = enqueue_.load(std::memory_order_acquire);
      }
    }
  }
  void publish(std::size_t pos, DecisionTrace* t) noexcept {
    const std::size_t i = pos & mask_;
    cells_[i].item = t;
    seq_of(i).store(pos + 1 - i - base_.load(std::memory_order_relaxed), std::memory_order_release);
  }
  bool push(DecisionTrace* t) noexcept {
    std::size_t pos;
    if (!claim(pos)) return false;
    publish(pos, t);
    return true;
  }
  /// {false, _}: nothing published at the head yet. The item may be null (a producer that
  /// could not allocate). Safe with several consumers while nothing calls rebase().
  std::pair<bool, DecisionTrace*> pop() noexcept {
    std::size_t pos = dequeue_.load(std::memory_order_acquire);
    for (;;) {
      const std::size_t i = pos & mask_;
      const std::size_t base = base_.load(std::memory_order_relaxed);
      const std::size_t seq = seq_of(i).load(std::memory_order_acquire) + i + base;
      auto dif = static_cast<std::intptr_t>(seq) - static_cast<std::intptr_t>(pos + 1);
      if (dif == 0) {
        if (dequeue_.compare_exchange_weak(pos, pos + 1, std::memory_order_acquire)) {
          DecisionTrace* t = cells_[i].item;
          seq_of(i).store(pos + mask_ + 1 - i - base, std::memory_order_release);
          return {true, t};
        }
      } else if (dif < 0) {
        return {false, nullptr};
      } else {
        pos = dequeue_.load(std::memory_order_acquire);
      }
    }
  }
  /// Tickets claimed and consumed since the ring was made (rebases do not change them).
  std::size_t claimed() const noexcept { return tickets(enqueue_); }
  std::size_t consumed() const noexcept { return tickets(dequeue_); }

  /// Gives the cells' pages back when the ring is empty; returns the bytes that were resident
  /// (0 when nothing was, or when the ring is not empty). Only the ring's single consumer may
  /// call it, and only where it does not pop: producers may run concurrently.
  std::size_t rebase() noexcept {
    const std::size_t d = dequeue_.load(std::memory_order_relaxed);
    std::size_t e = enqueue_.load(std::memory_order_acquire);
    if (e != d || e == base_.load(std::memory_order_relaxed)) return 0;  // not empty, or nothing used since the last rebase
    const std::size_t r = rebases_.load(std::memory_order_relaxed);
    rebases_.store(r + 1, std::memory_order_relaxed);  // odd: claimed()/consumed() wait
    std::atomic_thread_fence(std::memory_order_release);
    std::size_t resident = 0;
    if (enqueue_.compare_exchange_strong(e, kLocked, std::memory_order_acq_rel)) {
      // Every claimed position was consumed (e == d) and none can be claimed now: no cell is in use.
      resident = resident_bytes();
      const std::size_t next = (e & ~mask_) + mask_ + 1;  // > e, a multiple of the capacity
      skipped_.store(skipped_.load(std::memory_order_relaxed) + (next - e), std::memory_order_relaxed);
      base_.store(next, std::memory_order_relaxed);
      ::madvise(cells_, bytes_, MADV_DONTNEED);  // the pages read as zeros again: free for next + index
      dequeue_.store(next, std::memory_order_relaxed);
      enqueue_.store(next, std::memory_order_release);  // producers resume at the new base
    }
    rebases_.store(r + 2, std::memory_order_release);
    return resident;
  }

 private:
  // Never a real position (2^62 traces): the enqueue position while rebase() runs.
  static constexpr std::size_t kLocked = std::size_t{3} << 62;
  struct Cell {  // plain (zero pages are valid cells); seq is accessed through atomic_ref
    std::size_t seq;  // the sequence number minus the cell's index and the ring's base
    DecisionTrace* item;
  };
  std::atomic_ref<std::size_t> seq_of(std::size_t i) const noexcept { return std::atomic_ref<std::size_t>(cells_[i].seq); }
  std::size_t tickets(const std::atomic<std::size_t>& position) const noexcept {
    for (;;) {
      const std::size_t r = rebases_.load(std::memory_order_acquire);
      if (r & 1) {
        std::this_thread::yield();
        continue;
      }
      const std::size_t pos = position.load(std::memory_order_relaxed);
      const std::size_t skipped = skipped_.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (rebases_.load(std::memory_order_relaxed) == r && pos < kLocked) return pos - skipped;
    }
  }
  std::size_t resident_bytes() const noexcept {
    const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> in_core((bytes_ + page - 1) / page);
    if (::mincore(cells_, bytes_, in_core.data()) != 0) return 0;
    std::size_t n = 0;
    for (unsigned char c : in_core) n += c & 1;
    return n * page;
  }
  const std::size_t mask_;
  const std::size_t bytes_;
  Cell* cells_ = nullptr;
  std::atomic<std::size_t> base_{0};  // written only by rebase(), while producers are held off
  alignas(64) std::atomic<std::size_t> enqueue_{0};
  alignas(64) std::atomic<std::size_t> dequeue_{0};
  alignas(64) std::atomic<std::size_t> rebases_{0};  // sequence lock over the positions and skipped_
  std::atomic<std::size_t> skipped_{0};               // positions jumped over by rebases
};

}  // namespace

struct Tracer::Impl {
  TracerOptions opts;
  const Clock& clock;
  std::shared_ptr<TraceStore> store;
  TraceRing ring;
  // Emptied nodes the writer hands back for reuse: in steady state submit() allocates
  // nothing of its own. Holds at most kPoolCapacity nodes (surplus nodes are freed), so its
  // cells, which the positions walk through round after round, stay within 16 kB.
  static constexpr std::size_t kPoolCapacity = 1024;
  TraceRing pool;

  alignas(64) std::atomic<std::uint64_t> dropped_full{0};
  alignas(64) std::atomic<std::uint64_t> written{0};
  std::atomic<std::uint64_t> dropped_late{0};  // lost to failing writes or allocation
  std::atomic<std::uint64_t> write_errors{0};
  std::atomic<std::uint64_t> processed{0};     // ring tickets written or dropped

  mutable std::mutex mu;  // guards the fields below and the condition variables
  std::condition_variable wake;
  std::condition_variable done;
  bool stop = false;
  std::uint64_t flush_target = 0;
  std::string last_error;
  // release_idle() asks the writer to give back its batch storage and the ring's pages
  // (TraceRing::rebase runs on the ring's consumer); the writer answers with idle_done.
  std::uint64_t idle_asked = 0, idle_done = 0;
  std::size_t idle_ring_bytes = 0, idle_batch_bytes = 0;

  std::thread writer;
  Instant last_retention{};  // set at open, when retention was first applied; writer-only after

  Impl(TracerOptions o, const Clock& c, std::shared_ptr<TraceStore> s)
      : opts(std::move(o)), clock(c), store(std::move(s)), ring(opts.queue_capacity),
        pool(std::min(opts.queue_capacity, kPoolCapacity)) {}

  void run();
  void prepare(DecisionTrace& t) const;
};

void Tracer::Impl::prepare(DecisionTrace& t) const {
  if (opts.capture_bodies) {
    if (!t.request_body.empty()) t.request_body = prepare_body(t.request_body, opts.redact_fields, opts.body_cap_bytes);
    if (!t.response_body.empty())
      t.response_body = prepare_body(t.response_body, opts.redact_fields, opts.body_cap_bytes);
  } else {
    t.request_body.clear();
    t.response_body.clear();
  }
  // Every text field goes through the one scrubber (registered secrets by value + key
  // shapes): provider errors echo keys, and a reason or tag can quote an error. Here, on the
  // writer thread, so submit() stays cheap; nothing reads a trace before it is written.
  for (std::string* f : {&t.config, &t.project, &t.org, &t.end_user, &t.api_key_id, &t.error_message, &t.decision,
                         &t.reason, &t.ab_arm, &t.aggregation, &t.request_body, &t.response_body})
    scrub(*f);
  for (auto& [k, v] : t.tags) {
    scrub(k);
    scrub(v);
  }
  for (auto& b : t.budget_actions) scrub(b);
  for (auto& a : t.attempts)
    for (std::string* f : {&a.error, &a.why_tried, &a.why_ended, &a.outcome, &a.vote}) scrub(*f);
}

void Tracer::Impl::run() {
#if defined(__linux__)
  // Named for top/perf. SCHED_BATCH: the same CPU share as before (so the writer keeps up and
  // nothing is dropped), but a waking writer no longer preempts the io thread that shares its
  // core; it runs when the io thread's slice ends or it sleeps. Best effort: ignored if refused.
  pthread_setname_np(pthread_self(), "mlx-trace");
  sched_param sp{};
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
#endif
  std::vector<DecisionTrace> batch;  // reserved when traces arrive, given back when idle
  const std::size_t batch_reserve = std::min<std::size_t>(opts.batch_size, 4096);
  int failures = 0;
  std::uint64_t dropped_persisted = 0, errors_persisted = 0;
  const std::size_t batch_size = std::max<std::size_t>(opts.batch_size, 1);

  for (;;) {
    bool stopping, flushing;
    std::uint64_t idle_asked_now;
    bool idle_pending;
    {
      std::unique_lock lk(mu);
      // After a failed write wait the full interval (unless asked to flush or stop): the file
      // is locked or broken, and hammering it would not help.
      const bool backoff = failures > 0;
      wake.wait_for(lk, opts.flush_interval, [&] {
        return stop || flush_target > processed.load() || idle_asked > idle_done ||
               (!backoff && ring.claimed() - ring.consumed() >= batch_size);
      });
      stopping = stop;
      flushing = flush_target > processed.load();
      idle_asked_now = idle_asked;
      idle_pending = idle_asked > idle_done;
    }

    // Retention runs before the batch, so traces written this round were judged on the
    // same clock reading (and flush() callers see it applied).
    if (opts.retention_days > 0 && clock.now() - last_retention >= std::chrono::hours{1}) {
      last_retention = clock.now();
      if (auto r = store->apply_retention(opts.retention_days, clock.wall_now()); !r) {
        std::lock_guard lk(mu);
        last_error = r.error().describe();
      }
    }

    // Everything claimed before this point gets handled in this round (a claimed slot is
    // published within a few instructions, so waiting for it is a short spin).
    const std::size_t target = ring.claimed();
    if (batch.capacity() == 0 && ring.consumed() < target) batch.reserve(batch_reserve);
    for (;;) {
      if (batch.empty()) {
        std::uint64_t lost = 0;
        while (batch.size() < batch_size && ring.consumed() < target) {
          auto [got, t] = ring.pop();
          if (!got) {
            std::this_thread::yield();
            continue;
          }
          if (!t) {
            ++lost;
            continue;
          }
          try {
            prepare(*t);
            batch.push_back(std::move(*t));
          } catch (...) {
            ++lost;
          }
          if (!pool.push(t)) delete t;  // moved-from: empty strings and vectors
        }
        if (lost) {
          dropped_late.fetch_add(lost);
          processed.fetch_add(lost);
        }
      }
      const std::uint64_t dropped_now = dropped_full.load() + dropped_late.load();
      const std::uint64_t errors_now = write_errors.load();
      if (batch.empty() && dropped_now == dropped_persisted && errors_now == errors_persisted) break;

      Result<void> r;
      try {
        r = batch.empty() ? store->add_counters(0, dropped_now - dropped_persisted, errors_now - errors_persisted,
                                                clock.wall_now())
                          : store->write_batch(batch, batch.size(), dropped_now - dropped_persisted,
                                               errors_now - errors_persisted, clock.wall_now());
      } catch (const std::exception& e) {
        r = fail(ErrorKind::internal, std::string("trace write threw: ") + e.what());
      }
      if (r) {
        if (opts.otlp)
          for (const auto& t : batch) opts.otlp->offer(t);  // a copy each; never blocks (drops are counted there)
        written.fetch_add(batch.size());
        processed.fetch_add(batch.size());
        batch.clear();
        dropped_persisted = dropped_now;
        errors_persisted = errors_now;
        failures = 0;
      } else {
        write_errors.fetch_add(1);
        {
          std::lock_guard lk(mu);
          last_error = r.error().describe();
        }
        if (++failures > opts.write_retries || flushing || stopping) {
          std::uint64_t lost = batch.size();
          batch.clear();
          if (flushing || stopping) {
            // Someone is waiting: do not try the file again for every remaining batch.
            while (ring.consumed() < target) {
              auto [got, t] = ring.pop();
              if (!got) {
                std::this_thread::yield();
                continue;
              }
              if (t && !pool.push(t)) delete t;
              ++lost;
            }
          }
          dropped_late.fetch_add(lost);
          processed.fetch_add(lost);
          failures = 0;
        }
        break;  // wait for the next wake-up before trying the file again
      }
      if (ring.consumed() >= target) {
        // Drained; one more lap persists counters that changed during this write.
        if (dropped_full.load() + dropped_late.load() == dropped_persisted && write_errors.load() == errors_persisted)
          break;
      }
    }

    // Asked by release_idle(): the batch's storage (batch_size traces, touched by a burst) and
    // the ring's pages go back now that everything is written; both come back on demand.
    // A batch kept for a retry (a failing file) is not given back: the request is answered
    // with nothing released, so the writer does not spin on it.
    std::size_t ring_bytes = 0, batch_bytes = 0;
    if (idle_pending && batch.empty()) {
      batch_bytes = batch.capacity() * sizeof(DecisionTrace);
      std::vector<DecisionTrace>().swap(batch);
      ring_bytes = ring.rebase();
    }
    {
      std::lock_guard lk(mu);
      if (idle_pending) {
        idle_done = idle_asked_now;
        idle_ring_bytes = ring_bytes;
        idle_batch_bytes = batch_bytes;
      }
      done.notify_all();
    }
    if (stopping && ring.consumed() >= ring.claimed() && batch.empty()) break;
  }
}

Tracer::Tracer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Tracer>> Tracer::open(TracerOptions opts, const Clock& clock) {
  if (opts.queue_capacity == 0) return fail(ErrorKind::invalid_config, "tracer queue_capacity must be > 0");
  if (opts.batch_size == 0) opts.batch_size = 1;
  auto store = TraceStore::open(opts.path, TraceStore::Mode::read_write, opts.busy_timeout);
  if (!store) return fail(store.error());
  if (opts.retention_days > 0) {
    if (auto r = (*store)->apply_retention(opts.retention_days, clock.wall_now()); !r) return fail(r.error());
  }
  auto impl = std::make_unique<Impl>(std::move(opts), clock, std::move(*store));
  Impl* raw = impl.get();
  raw->last_retention = clock.now();
  raw->writer = std::thread([raw] { raw->run(); });
  return std::unique_ptr<Tracer>(new Tracer(std::move(impl)));
}

bool Tracer::submit(DecisionTrace&& t) noexcept {
  Impl& im = *impl_;
  std::size_t pos;
  if (!im.ring.claim(pos)) {
    im.dropped_full.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  DecisionTrace* node = nullptr;
  if (auto [got, recycled] = im.pool.pop(); got) {
    node = recycled;
    *node = std::move(t);
  } else {
    node = new (std::nothrow) DecisionTrace(std::move(t));
  }
  im.ring.publish(pos, node);  // a null node is counted as dropped by the writer
  if ((pos + 1) % im.opts.batch_size == 0) im.wake.notify_one();
  return node != nullptr;
}

void Tracer::flush() {
  Impl& im = *impl_;
  std::unique_lock lk(im.mu);
  const std::uint64_t target = im.ring.claimed();
  if (im.processed.load() >= target) return;
  im.flush_target = std::max<std::uint64_t>(im.flush_target, target);
  im.wake.notify_one();
  im.done.wait(lk, [&] { return im.processed.load() >= target; });
}

TracerStats Tracer::stats() const noexcept {
  const Impl& im = *impl_;
  TracerStats s;
  const std::uint64_t claimed = im.ring.claimed();
  const std::uint64_t full = im.dropped_full.load();
  s.written = im.written.load();
  const std::uint64_t late = im.dropped_late.load();
  s.dropped = full + late;
  s.write_errors = im.write_errors.load();
  s.submitted = claimed + full;
  s.queued = claimed > s.written + late ? claimed - s.written - late : 0;
  try {
    std::lock_guard lk(im.mu);
    s.last_error = im.last_error;
  } catch (...) {
  }
  return s;
}

std::shared_ptr<TraceStore> Tracer::store() const noexcept { return impl_->store; }
std::shared_ptr<OtlpExporter> Tracer::otlp() const noexcept { return impl_->opts.otlp; }

Tracer::Released Tracer::release_idle() noexcept {
  Impl& im = *impl_;
  // A few nodes stay so that the next requests do not allocate; the pool is a multi-consumer
  // ring, so popping here races safely with submit() and the writer's pushes. Few: the nodes
  // were allocated during the burst, here and there in the io thread's heap, and each one
  // kept pins a page (64 kept cost 63 pages after 2,000 streams).
  constexpr std::size_t kKeep = 8;
  Released out;
  while (im.pool.claimed() - im.pool.consumed() > kKeep) {
    auto [got, t] = im.pool.pop();
    if (!got) break;
    delete t;
    ++out.nodes;
  }
  out.cache_bytes = im.store->release_memory();
  // The writer's part (its batch storage, the ring's pages): ask, and wait for its answer.
  // Bounded: a writer inside a long write answers at the next pass instead.
  try {
    std::unique_lock lk(im.mu);
    const std::uint64_t want = ++im.idle_asked;
    im.wake.notify_one();
    if (im.done.wait_for(lk, std::chrono::seconds(2), [&] { return im.idle_done >= want || im.stop; }) &&
        im.idle_done >= want) {
      out.ring_bytes = im.idle_ring_bytes;
      out.batch_bytes = im.idle_batch_bytes;
    }
  } catch (...) {  // a mutex that cannot lock: nothing released
  }
  return out;
}

Tracer::~Tracer() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stop = true;
  }
  impl_->wake.notify_one();
  if (impl_->writer.joinable()) impl_->writer.join();
}

}  // namespace modelux
