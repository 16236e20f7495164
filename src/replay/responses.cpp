// Responses-mode replay: re-send stored request bodies to the candidate's providers and
// compare the answers with the recorded ones.
//
// The requests go through a Router built from the candidate config (tracing off: a replay must
// not write into the store it reads), at most `concurrency` at a time, and stop being sent once
// the candidate's spend reaches `cost_cap_usd`. Answers are compared by exact text, JSON
// validity, length, and the caller's scorer when given.
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "modelux/router.hpp"
#include "replay/replay_impl.hpp"

namespace modelux {

using namespace replay_detail;

namespace {

/// The answer text of a stored response body (an OpenAI chat completion), else the body itself.
std::string answer_text(const std::string& body) {
  Json j = Json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
    const Json& c = j["choices"][0];
    if (c.contains("message") && c["message"].contains("content") && c["message"]["content"].is_string())
      return c["message"]["content"].get<std::string>();
  }
  return body;
}

std::string chat_text(const ChatResponse& r) {
  std::string out;
  if (!r.choices.empty())
    for (const auto& part : r.choices[0].message.content) out += part.text;
  return out;
}

void add_side(ReplaySide& s, const DecisionTrace& t, std::vector<double>& lat, std::vector<double>& ttft,
              Nanos total_budget) {
  bool downgraded = false;
  for (const auto& a : t.budget_actions) downgraded = downgraded || a.starts_with("downgrade to ");
  add_sample(s,
             {.ok = t.ok, .stream = t.stream, .served_provider = t.served_provider, .served_model = t.served_model,
              .error_kind = t.error_kind, .ttft = t.ttft, .total = t.total, .attempts = t.attempts.size(),
              .downgraded = downgraded, .cost_usd = t.cost.total()},
             lat, ttft, total_budget);
}

}  // namespace

Result<ReplayReport> replay_responses(const ReplayOptions& o, const std::string& slug) {
  const auto wall0 = std::chrono::steady_clock::now();
  auto cand = build_candidate(o, slug);
  if (!cand) return fail(cand.error());
  auto store = TraceStore::open(o.store_path, TraceStore::Mode::read_only);
  if (!store) return fail(store.error());
  // The same checks (empty store, unknown slug) as routing mode, on the cheap scan.
  {
    auto probe_opts = o;
    probe_opts.limit = 1;
    auto probe = load_traces(probe_opts, slug, **store);
    if (!probe) return fail(probe.error());
  }
  TraceQuery q;
  q.config = "@" + slug;
  q.since = o.since;
  q.until = o.until;
  q.limit = o.limit;
  auto traces = (*store)->query(q);
  if (!traces) return fail(traces.error());
  std::reverse(traces->begin(), traces->end());

  ReplayReport rep;
  rep.mode = ReplayMode::responses;
  rep.slug = "@" + slug;
  rep.store = o.store_path;
  rep.seed = o.seed;
  std::vector<const DecisionTrace*> with_body;
  for (const auto& t : *traces)
    if (!t.request_body.empty()) with_body.push_back(&t);
  rep.responses.with_bodies = with_body.size();
  if (with_body.empty())
    return fail(ErrorKind::bad_request,
                "responses mode re-sends stored request bodies, but none of the " + std::to_string(traces->size()) +
                    " traces of '@" + slug + "' has one: tracing.capture_bodies was off when they were recorded. "
                    "Turn it on and collect traffic first, or use --mode routing (it needs no bodies)");
  if (with_body.size() < traces->size())
    rep.notes.push_back(std::to_string(traces->size() - with_body.size()) +
                        " traces had no captured body and were not re-sent");
  rep.traces = with_body.size();
  rep.from = with_body.front()->time;
  rep.to = with_body.back()->time;

  Config cfg = *cand->config;
  cfg.tracing_options.enabled = false;
  RouterOptions ro;
  ro.open_tracer = false;
  ro.seed = o.seed;
  auto router = Router::create(std::move(cfg), ro);
  if (!router) return fail(router.error());

  struct Slot {
    std::optional<Completion> done;
  };
  std::vector<Slot> slots(with_body.size());
  std::mutex mu;
  std::condition_variable cv;
  std::size_t in_flight = 0, finished = 0;
  double spent = 0;
  const std::size_t limit = std::max<std::size_t>(1, o.concurrency);
  std::size_t sent = 0, skipped = 0;
  for (std::size_t i = 0; i < with_body.size(); ++i) {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return in_flight < limit; });
    if (spent >= o.cost_cap_usd) {
      ++skipped;
      continue;
    }
    auto req = parse_chat_request(with_body[i]->request_body);
    if (!req) {
      rep.notes.push_back("trace " + with_body[i]->request_id + ": stored body not re-sendable (" +
                          req.error().message + "; bodies cut at the capture cap cannot be re-sent)");
      continue;
    }
    req->model = "@" + slug;
    req->stream = false;
    CallContext ctx;
    ctx.request_id = "replay_" + with_body[i]->request_id;
    ctx.project = with_body[i]->project;
    ctx.org = with_body[i]->org;
    ctx.end_user = with_body[i]->end_user;
    ctx.tags = with_body[i]->tags;
    ++in_flight;
    ++sent;
    lock.unlock();
    (*router)->complete_async(std::move(*req), std::move(ctx), [&, i](Completion c) {
      std::lock_guard g(mu);
      spent += c.trace.cost.total();
      slots[i].done = std::move(c);
      --in_flight;
      ++finished;
      cv.notify_all();
    });
    if (o.progress) o.progress(i + 1, with_body.size());
  }
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return in_flight == 0; });
  }
  rep.responses.sent = sent;
  rep.responses.skipped_cost_cap = skipped;
  if (skipped)
    rep.notes.push_back(std::to_string(skipped) + " requests not sent: the cost cap of $" +
                        std::to_string(o.cost_cap_usd) + " was reached");

  std::vector<double> clat, cttft, nlat, nttft;
  double ratio_sum = 0, score_sum = 0;
  std::size_t ratio_n = 0, score_n = 0;
  const Nanos budget = cand->policy->total_budget();
  for (std::size_t i = 0; i < with_body.size(); ++i) {
    if (!slots[i].done) continue;
    const DecisionTrace& rec = *with_body[i];
    const Completion& c = *slots[i].done;
    add_side(rep.current, rec, clat, cttft, budget);
    add_side(rep.candidate, c.trace, nlat, nttft, budget);
    ReplayRow row;
    row.request_id = rec.request_id;
    row.time = rec.time;
    row.current_ok = rec.ok;
    if (rec.ok) row.current_target = rec.served_provider + "/" + rec.served_model;
    row.current_error = rec.error_kind;
    row.current_latency_ms = ms(rec.total);
    row.current_cost_usd = rec.cost.total();
    row.candidate_ok = c.result.has_value();
    if (c.result) row.candidate_target = c.served.key();
    else row.candidate_error = std::string(to_string(c.result.error().kind));
    row.candidate_latency_ms = ms(c.trace.total);
    row.candidate_cost_usd = c.trace.cost.total();
    row.candidate_attempts = c.trace.attempts.size();
    if (c.result && rec.ok && !rec.response_body.empty()) {
      ResponsePair p;
      p.request_id = rec.request_id;
      p.request_body = rec.request_body;
      p.recorded = answer_text(rec.response_body);
      p.candidate = chat_text(*c.result);
      row.exact_match = p.recorded == p.candidate;
      rep.responses.exact_matches += *row.exact_match ? 1 : 0;
      const bool rec_json = Json::accept(p.recorded), cand_json = Json::accept(p.candidate);
      rep.responses.json_valid_recorded += rec_json ? 1 : 0;
      rep.responses.json_valid_candidate += cand_json ? 1 : 0;
      row.candidate_json_valid = cand_json;
      if (!p.recorded.empty()) {
        row.length_ratio = static_cast<double>(p.candidate.size()) / static_cast<double>(p.recorded.size());
        ratio_sum += *row.length_ratio;
        ++ratio_n;
      }
      if (o.scorer) {
        row.score = o.scorer(p);
        if (row.score) {
          score_sum += *row.score;
          ++score_n;
        }
      }
    }
    if (o.keep_rows) rep.rows.push_back(std::move(row));
  }
  finish_side(rep.current, clat, cttft);
  finish_side(rep.candidate, nlat, nttft);
  rep.responses.mean_length_ratio = ratio_n ? ratio_sum / static_cast<double>(ratio_n) : 0;
  if (score_n) rep.responses.mean_score = score_sum / static_cast<double>(score_n);
  rep.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return rep;
}

}  // namespace modelux
