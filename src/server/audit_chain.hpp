// The audit chain check every backend runs in verify(): entries are fed oldest first, then
// the recorded head closes the walk. One implementation, so the SQLite and PostgreSQL stores
// report a tampered log in the same words.
//
// Threading: a walker is a local value of one verify() call.
#pragma once

#include <optional>
#include <string>

#include "modelux/control.hpp"

namespace modelux {

class AuditChainWalker {
 public:
  /// false once a fault was found (stop feeding; result() names it).
  bool feed(const AuditEntry& e) {
    ++v_.checked;
    if (e.seq != expect_seq_) {
      return bad(expect_seq_, "entry " + std::to_string(expect_seq_) + " is missing (deleted)" +
                                  (e.seq > expect_seq_ ? "; the next entry present is " + std::to_string(e.seq) : std::string()));
    }
    if (e.prev_hash != prev_)
      return bad(e.seq, "entry " + std::to_string(e.seq) + " does not link to the entry before it (an entry was deleted or replaced)");
    if (audit_entry_hash(e) != e.hash) return bad(e.seq, "entry " + std::to_string(e.seq) + " does not match its hash (edited)");
    prev_ = e.hash;
    ++expect_seq_;
    return true;
  }

  /// The recorded head (seq and hash of the newest entry written; nullopt when none was
  /// recorded): deleting the newest entries shows up here.
  AuditVerification finish(const std::optional<std::string>& head_seq, const std::optional<std::string>& head_hash) {
    if (!v_.ok) return v_;
    std::int64_t last = expect_seq_ - 1;
    if (head_seq && std::to_string(last) != *head_seq) {
      bad(last + 1, "the log ends at entry " + std::to_string(last) + " but entry " + *head_seq + " was written (entries deleted at the end)");
      return v_;
    }
    if (head_hash && *head_hash != prev_) {
      bad(last, "the newest entry's hash differs from the recorded head (edited)");
      return v_;
    }
    if (!head_seq && last > 0) bad(last, "the recorded head of the log is missing");
    return v_;
  }

  const AuditVerification& result() const { return v_; }

 private:
  bool bad(std::int64_t seq, std::string why) {
    v_.ok = false;
    v_.first_bad_seq = seq;
    v_.problem = std::move(why);
    return false;
  }

  AuditVerification v_;
  std::string prev_;
  std::int64_t expect_seq_ = 1;
};

}  // namespace modelux
