// `single`: one model, one attempt. Also the leaf every other strategy uses for a model entry.
#pragma once

#include <optional>

#include "policy/strategy.hpp"

namespace modelux {

/// A leaf node: one attempt against one target. Honours health (open breaker: skipped;
/// empty token bucket: skipped, queued or failed per RateLimitMode).
class TargetStrategy final : public Strategy {
 public:
  TargetStrategy(Target t, std::optional<ModelInfo> model, Nanos timeout, Nanos ttft, Nanos stall, Nanos total,
                 Nanos max_stream = Nanos{0});
  std::string_view name() const noexcept override { return "single"; }
  StatePtr start(SessionCore& s, Instant now, const StartArgs& a) const override;
  Nanos total_budget() const noexcept override { return total_; }
  const Target* only_target() const noexcept override { return &target_; }
  void collect_targets(std::vector<Target>& out) const override { out.push_back(target_); }

  const Target& target() const noexcept { return target_; }
  const std::string& key() const noexcept { return key_; }
  const ModelInfo* model() const noexcept { return model_ ? &*model_ : nullptr; }
  Nanos timeout() const noexcept { return timeout_; }
  Nanos ttft_timeout() const noexcept { return ttft_; }
  Nanos stall_timeout() const noexcept { return stall_; }
  /// Bound on a committed stream (0 = none).
  Nanos max_stream() const noexcept { return max_stream_; }

 private:
  Target target_;
  std::string key_;
  std::optional<ModelInfo> model_;
  Nanos timeout_, ttft_, stall_, total_, max_stream_;
};

/// A leaf for `t` with catalog info copied from the resolver.
Result<std::unique_ptr<Strategy>> make_target_strategy(Target t, const PolicyResolver& r, Nanos timeout,
                                                       Nanos ttft = Nanos{0}, Nanos stall = Nanos{0},
                                                       Nanos total = Nanos{0}, Nanos max_stream = Nanos{0});
/// Compiles {"strategy":"single","model":...} or {"model":...,"timeout_ms":...}.
Result<std::unique_ptr<Strategy>> compile_single(const Json& cfg, const std::string& path, const PolicyResolver& r);

}  // namespace modelux
