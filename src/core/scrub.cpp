// The process-wide secret scrubber (see modelux/scrub.hpp).
//
// Registered values: Aho-Corasick over every secret (sparse goto lists + failure links), one
// pass over the text whatever the number of secrets; cost O(text + matches). A snapshot is
// immutable once published, so scrub() reads it without a lock. Key shapes: one pass looking
// for each known prefix at a token boundary followed by enough credential characters.
// Matches from both passes are merged into intervals and replaced once.
#include "modelux/scrub.hpp"

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

namespace modelux {

namespace {

class Automaton {
 public:
  explicit Automaton(const std::set<std::string, std::less<>>& words) {
    nodes_.emplace_back();
    for (const auto& w : words) insert(w);
    build();
  }
  std::size_t size() const noexcept { return count_; }

  // Appends [begin, end) of every match to `out`.
  void find(std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out) const {
    if (count_ == 0) return;
    int n = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
      auto c = static_cast<unsigned char>(s[i]);
      int next;
      while ((next = step(n, c)) < 0 && n != 0) n = nodes_[static_cast<std::size_t>(n)].fail;
      n = next < 0 ? 0 : next;
      std::size_t len = nodes_[static_cast<std::size_t>(n)].out;
      if (len) out.emplace_back(i + 1 - len, i + 1);
    }
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> next;  // sorted by byte
    int fail = 0;
    std::size_t out = 0;  // longest secret ending here (own or via failure links)
  };

  int step(int n, unsigned char c) const {
    const auto& v = nodes_[static_cast<std::size_t>(n)].next;
    auto it = std::lower_bound(v.begin(), v.end(), c, [](const auto& p, unsigned char b) { return p.first < b; });
    return it != v.end() && it->first == c ? it->second : -1;
  }
  void insert(const std::string& w) {
    int n = 0;
    for (char ch : w) {
      auto c = static_cast<unsigned char>(ch);
      int nx = step(n, c);
      if (nx < 0) {
        nx = static_cast<int>(nodes_.size());
        nodes_.emplace_back();
        auto& v = nodes_[static_cast<std::size_t>(n)].next;
        auto it = std::lower_bound(v.begin(), v.end(), c, [](const auto& p, unsigned char b) { return p.first < b; });
        v.insert(it, {c, nx});
      }
      n = nx;
    }
    nodes_[static_cast<std::size_t>(n)].out = std::max(nodes_[static_cast<std::size_t>(n)].out, w.size());
    ++count_;
  }
  void build() {
    std::vector<int> queue;
    for (auto [c, child] : nodes_[0].next) queue.push_back(child);
    for (std::size_t qi = 0; qi < queue.size(); ++qi) {
      int u = queue[qi];
      for (auto [c, v] : nodes_[static_cast<std::size_t>(u)].next) {
        int f = nodes_[static_cast<std::size_t>(u)].fail;
        int nx;
        while ((nx = step(f, c)) < 0 && f != 0) f = nodes_[static_cast<std::size_t>(f)].fail;
        nodes_[static_cast<std::size_t>(v)].fail = nx < 0 || nx == v ? 0 : nx;
        auto& node = nodes_[static_cast<std::size_t>(v)];
        node.out = std::max(node.out, nodes_[static_cast<std::size_t>(node.fail)].out);
        queue.push_back(v);
      }
    }
  }

  std::vector<Node> nodes_;
  std::size_t count_ = 0;
};

struct Registry {
  std::mutex mu;  // serializes writers
  std::set<std::string, std::less<>> words;
  std::atomic<std::shared_ptr<const Automaton>> snapshot{std::make_shared<const Automaton>(std::set<std::string, std::less<>>{})};
};

Registry& registry() {
  static Registry r;  // never destroyed before last use: function-local, process lifetime
  return r;
}

bool token_char(char c, bool wide) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_') return true;
  return wide && (c == '.' || c == '~' || c == '+' || c == '/' || c == '=');
}

struct Shape {
  std::string_view prefix;
  std::size_t min_tail;
  bool wide;         // token68 characters (Bearer tokens) instead of [A-Za-z0-9_-]
  bool upper_digit;  // AWS access key ids: [A-Z0-9] only
};

// Known credential shapes. A prefix only counts at a token boundary, so "risk-…" is not "sk-…".
constexpr Shape kShapes[] = {
    {"sk-", 16, false, false},  {"AIza", 20, false, false}, {"AKIA", 12, false, true},
    {"ASIA", 12, false, true},  {"mlx-", 16, false, false}, {"xai-", 16, false, false},
    {"gsk_", 16, false, false}, {"Bearer ", 8, true, false}, {"bearer ", 8, true, false},
};

void find_shapes(std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out) {
  for (const Shape& sh : kShapes) {
    std::size_t at = 0;
    while ((at = s.find(sh.prefix, at)) != std::string_view::npos) {
      bool boundary = at == 0 || !token_char(s[at - 1], false);
      std::size_t end = at + sh.prefix.size();
      while (end < s.size() &&
             (sh.upper_digit ? ((s[end] >= 'A' && s[end] <= 'Z') || (s[end] >= '0' && s[end] <= '9')) : token_char(s[end], sh.wide)))
        ++end;
      if (boundary && end - at - sh.prefix.size() >= sh.min_tail) {
        // "Bearer <token>" keeps the scheme word so a reader still sees what was there.
        std::size_t from = sh.prefix.back() == ' ' ? at + sh.prefix.size() : at;
        out.emplace_back(from, end);
      }
      at = std::max(end, at + 1);
    }
  }
}

}  // namespace

void add_secret(std::string_view secret) {
  if (secret.size() < 8) return;
  Registry& r = registry();
  std::lock_guard lk(r.mu);
  if (!r.words.emplace(secret).second) return;
  r.snapshot.store(std::make_shared<const Automaton>(r.words));
}

std::size_t secret_count() noexcept { return registry().snapshot.load()->size(); }

bool scrub(std::string& s) {
  if (s.empty()) return false;
  std::vector<std::pair<std::size_t, std::size_t>> hits;
  registry().snapshot.load()->find(s, hits);
  find_shapes(s, hits);
  if (hits.empty()) return false;
  std::sort(hits.begin(), hits.end());
  std::string out;
  out.reserve(s.size());
  std::size_t pos = 0;
  for (std::size_t i = 0; i < hits.size();) {
    std::size_t b = hits[i].first, e = hits[i].second;
    for (++i; i < hits.size() && hits[i].first <= e; ++i) e = std::max(e, hits[i].second);
    out.append(s, pos, b - pos);  // merged and sorted: b >= pos
    out += kRedacted;
    pos = e;
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
  return true;
}

std::string scrubbed(std::string_view s) {
  std::string out(s);
  scrub(out);
  return out;
}

}  // namespace modelux
