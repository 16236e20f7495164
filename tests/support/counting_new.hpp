// Replaces the global operator new/delete to count heap allocations (bench_policy and the
// allocation tests). Include it from exactly one translation unit of an executable: the
// replacements are program-wide.
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

#include "modelux/wire.hpp"

namespace modelux::testing {
/// Heap allocations made through operator new / new[] so far.
inline std::atomic<long> heap_allocations{0};
/// Non-null pointers given back through operator delete / delete[] so far: allocations minus
/// frees is the number of live heap blocks (the leak tests compare it before and after).
inline std::atomic<long> heap_frees{0};
inline long live_heap_blocks() { return heap_allocations.load() - heap_frees.load(); }

/// The request the decision-cost benchmark and the allocation tests route: a system prompt
/// and one user question.
inline ChatRequest decision_request() {
  ChatRequest r;
  r.model = "@production";
  Message sys;
  sys.role = "system";
  ContentPart p;
  p.text = "You are a concise assistant.";
  sys.content.push_back(p);
  Message u;
  u.role = "user";
  ContentPart q;
  q.text = "What is the capital of France? Answer in one word.";
  u.content.push_back(q);
  r.messages = {sys, u};
  return r;
}
}  // namespace modelux::testing

void* operator new(std::size_t n) {
  modelux::testing::heap_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  modelux::testing::heap_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
namespace modelux::testing {
inline void counted_free(void* p) noexcept {
  if (p) heap_frees.fetch_add(1, std::memory_order_relaxed);
  std::free(p);
}
}  // namespace modelux::testing
void operator delete(void* p) noexcept { modelux::testing::counted_free(p); }
void operator delete[](void* p) noexcept { modelux::testing::counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { modelux::testing::counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { modelux::testing::counted_free(p); }
