// DecisionTrace / AttemptRecord reuse: clear() keeps every buffer so a reused routing session
// refills the same trace without allocating. Keep in step with the fields in decision.hpp.
#include "modelux/decision.hpp"

namespace modelux {

void AttemptRecord::clear() noexcept {
  id = 0;
  model.clear();
  provider.clear();
  start_offset = duration = ttft = Nanos{0};
  ok = false;
  outcome.clear();
  status = 0;
  error.clear();
  usage = Usage{};
  cost = Cost{};
  why_tried.clear();
  why_ended.clear();
  member = -1;
  vote.clear();
}

void DecisionTrace::clear() noexcept {
  request_id.clear();
  time = WallTime{};
  config.clear();
  config_version = 0;
  strategy.clear();
  project.clear();
  org.clear();
  end_user.clear();
  api_key_id.clear();
  tags.clear();
  stream = false;
  est_input_tokens = 0;
  max_tokens = 0;
  attempts.clear();
  ok = false;
  served_model.clear();
  served_provider.clear();
  error_kind.clear();
  error_message.clear();
  decision.clear();
  reason.clear();
  total = ttft = Nanos{0};
  usage = Usage{};
  cost = Cost{};
  budget_actions.clear();
  ab_arm.clear();
  aggregation.clear();
  request_body.clear();
  response_body.clear();
}

}  // namespace modelux
