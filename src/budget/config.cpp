// Parsing of the "budgets" array. Every fault names its JSON path; nothing half-loads.
#include <cmath>
#include <set>

#include "budget/window.hpp"
#include "modelux/budget.hpp"

namespace modelux {

std::string_view to_string(BudgetScopeKind k) noexcept {
  switch (k) {
    case BudgetScopeKind::all: return "all";
    case BudgetScopeKind::org: return "org";
    case BudgetScopeKind::project: return "project";
    case BudgetScopeKind::tag: return "tag";
    case BudgetScopeKind::end_user: return "end_user";
    case BudgetScopeKind::api_key: return "api_key";
  }
  return "all";
}

std::string_view to_string(BudgetWindowKind k) noexcept {
  switch (k) {
    case BudgetWindowKind::daily: return "daily";
    case BudgetWindowKind::weekly: return "weekly";
    case BudgetWindowKind::monthly: return "monthly";
    case BudgetWindowKind::rolling: return "rolling";
  }
  return "daily";
}

std::string BudgetSpec::scope_label() const {
  if (scope == BudgetScopeKind::all) return "all";
  std::string s(to_string(scope));
  s += ':';
  if (scope == BudgetScopeKind::tag) {
    s += tag_key;
    s += '=';
  }
  s += scope_value;
  return s;
}

namespace {

Result<std::optional<double>> read_limit(const Json& b, const char* key, const std::string& path, bool integral) {
  auto it = b.find(key);
  if (it == b.end() || it->is_null()) return std::optional<double>{};
  const std::string p = path + "." + key;
  if (!it->is_number()) return fail(ErrorKind::invalid_config, std::string(key) + " must be a number or null", p);
  double v = it->get<double>();
  if (!std::isfinite(v) || v < 0) return fail(ErrorKind::invalid_config, std::string(key) + " must be >= 0", p);
  if (integral && v != std::floor(v)) return fail(ErrorKind::invalid_config, std::string(key) + " must be an integer", p);
  return std::optional<double>{v};
}

Result<BudgetSpec> parse_one(const Json& b, const std::string& path) {
  if (!b.is_object()) return fail(ErrorKind::invalid_config, "a budget must be an object", path);
  static const std::set<std::string> kAllowed = {"name",      "scope",       "window",         "window_s",
                                                 "timezone",  "limit_usd",   "limit_tokens",   "limit_requests",
                                                 "soft",      "alerts",      "unknown_price",  "description"};
  for (auto it = b.begin(); it != b.end(); ++it)
    if (!kAllowed.contains(it.key()))
      return fail(ErrorKind::invalid_config, "unknown budget field '" + it.key() + "'", path + "." + it.key());

  BudgetSpec s;
  auto name = b.find("name");
  if (name == b.end() || !name->is_string() || name->get<std::string>().empty())
    return fail(ErrorKind::invalid_config, "budget needs a non-empty string name", path + ".name");
  s.name = name->get<std::string>();
  if (s.name.find_first_of("|\n") != std::string::npos)
    return fail(ErrorKind::invalid_config, "budget name must not contain '|' or newlines", path + ".name");

  // scope
  if (auto sc = b.find("scope"); sc != b.end() && !sc->is_null()) {
    const std::string sp = path + ".scope";
    if (!sc->is_object()) return fail(ErrorKind::invalid_config, "scope must be an object like {\"project\":\"acme\"}", sp);
    if (sc->size() > 1) return fail(ErrorKind::invalid_config, "scope must name exactly one of org, project, tag, end_user, api_key", sp);
    if (sc->size() == 1) {
      const std::string key = sc->begin().key();
      const Json& v = sc->begin().value();
      const std::string vp = sp + "." + key;
      if (key == "org") s.scope = BudgetScopeKind::org;
      else if (key == "project") s.scope = BudgetScopeKind::project;
      else if (key == "tag") s.scope = BudgetScopeKind::tag;
      else if (key == "end_user") s.scope = BudgetScopeKind::end_user;
      else if (key == "api_key") s.scope = BudgetScopeKind::api_key;
      else return fail(ErrorKind::invalid_config, "unknown scope '" + key + "' (org, project, tag, end_user, api_key)", vp);
      if (!v.is_string() || v.get<std::string>().empty())
        return fail(ErrorKind::invalid_config, "scope value must be a non-empty string", vp);
      std::string val = v.get<std::string>();
      if (val.find('|') != std::string::npos) return fail(ErrorKind::invalid_config, "scope value must not contain '|'", vp);
      if (s.scope == BudgetScopeKind::tag) {
        auto eq = val.find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == val.size())
          return fail(ErrorKind::invalid_config, "tag scope must look like \"key=value\" (value may be *)", vp);
        s.tag_key = val.substr(0, eq);
        s.scope_value = val.substr(eq + 1);
      } else {
        s.scope_value = std::move(val);
      }
    }
  }

  // window
  if (auto w = b.find("window"); w != b.end()) {
    if (!w->is_string()) return fail(ErrorKind::invalid_config, "window must be a string", path + ".window");
    const auto ws = w->get<std::string>();
    if (ws == "daily") s.window = BudgetWindowKind::daily;
    else if (ws == "weekly") s.window = BudgetWindowKind::weekly;
    else if (ws == "monthly") s.window = BudgetWindowKind::monthly;
    else if (ws == "rolling") s.window = BudgetWindowKind::rolling;
    else return fail(ErrorKind::invalid_config, "window must be daily, weekly, monthly or rolling", path + ".window");
  } else {
    return fail(ErrorKind::invalid_config, "budget needs a window (daily, weekly, monthly, rolling)", path + ".window");
  }
  if (auto ws = b.find("window_s"); ws != b.end() && !ws->is_null()) {
    if (s.window != BudgetWindowKind::rolling)
      return fail(ErrorKind::invalid_config, "window_s applies to rolling windows only", path + ".window_s");
    if (!ws->is_number_integer() || ws->get<std::int64_t>() < 1 || ws->get<std::int64_t>() > 400LL * 86400)
      return fail(ErrorKind::invalid_config, "window_s must be an integer number of seconds in [1, 34560000]",
                  path + ".window_s");
    s.window_s = ws->get<std::int64_t>();
  } else if (s.window == BudgetWindowKind::rolling) {
    return fail(ErrorKind::invalid_config, "a rolling window needs window_s", path + ".window_s");
  }
  if (auto tz = b.find("timezone"); tz != b.end() && !tz->is_null()) {
    if (!tz->is_string()) return fail(ErrorKind::invalid_config, "timezone must be a string", path + ".timezone");
    s.timezone = tz->get<std::string>();
    auto z = budget_detail::TimeZone::parse(s.timezone);
    if (!z) {
      Error e = z.error();
      e.path = path + ".timezone";
      return fail(std::move(e));
    }
  }

  // limits
  auto usd = read_limit(b, "limit_usd", path, false);
  if (!usd) return fail(usd.error());
  auto tok = read_limit(b, "limit_tokens", path, true);
  if (!tok) return fail(tok.error());
  auto req = read_limit(b, "limit_requests", path, true);
  if (!req) return fail(req.error());
  s.limit_usd = *usd;
  if (*tok) s.limit_tokens = static_cast<std::int64_t>(**tok);
  if (*req) s.limit_requests = static_cast<std::int64_t>(**req);
  if (!s.limit_usd && !s.limit_tokens && !s.limit_requests)
    return fail(ErrorKind::invalid_config, "budget needs at least one of limit_usd, limit_tokens, limit_requests",
                path + ".limit_usd");
  if (s.limit_usd && *s.limit_usd > 1e9)
    return fail(ErrorKind::invalid_config, "limit_usd must be at most 1e9", path + ".limit_usd");

  // soft threshold
  if (auto soft = b.find("soft"); soft != b.end() && !soft->is_null()) {
    const std::string sp = path + ".soft";
    if (!soft->is_object()) return fail(ErrorKind::invalid_config, "soft must be an object {percent, downgrade_to}", sp);
    for (auto it = soft->begin(); it != soft->end(); ++it)
      if (it.key() != "percent" && it.key() != "downgrade_to")
        return fail(ErrorKind::invalid_config, "unknown field '" + it.key() + "'", sp + "." + it.key());
    if (!s.limit_usd) return fail(ErrorKind::invalid_config, "soft threshold needs limit_usd", sp);
    auto pct = soft->find("percent");
    if (pct == soft->end() || !pct->is_number() || pct->get<double>() <= 0 || pct->get<double>() > 100)
      return fail(ErrorKind::invalid_config, "soft.percent must be a number in (0, 100]", sp + ".percent");
    s.soft_percent = pct->get<double>();
    if (auto d = soft->find("downgrade_to"); d != soft->end() && !d->is_null()) {
      if (!d->is_string() || d->get<std::string>().empty() || d->get<std::string>() == "@")
        return fail(ErrorKind::invalid_config, "downgrade_to must be \"@config\" or a model id", sp + ".downgrade_to");
      s.downgrade_to = d->get<std::string>();
    }
  }

  // alerts
  if (auto al = b.find("alerts"); al != b.end() && !al->is_null()) {
    const std::string ap = path + ".alerts";
    if (!al->is_array()) return fail(ErrorKind::invalid_config, "alerts must be an array of percents", ap);
    if (al->size() > 16) return fail(ErrorKind::invalid_config, "at most 16 alert thresholds", ap);
    s.alerts.clear();
    for (std::size_t i = 0; i < al->size(); ++i) {
      const Json& a = (*al)[i];
      if (!a.is_number() || a.get<double>() <= 0 || a.get<double>() > 1000)
        return fail(ErrorKind::invalid_config, "alert threshold must be a percent in (0, 1000]",
                    ap + "[" + std::to_string(i) + "]");
      s.alerts.push_back(a.get<double>());
    }
    std::sort(s.alerts.begin(), s.alerts.end());
    s.alerts.erase(std::unique(s.alerts.begin(), s.alerts.end()), s.alerts.end());
    if (!s.alerts.empty() && !s.limit_usd)
      return fail(ErrorKind::invalid_config, "alerts are percents of limit_usd, which is not set", ap);
  } else if (!s.limit_usd) {
    s.alerts.clear();
  }

  if (auto up = b.find("unknown_price"); up != b.end() && !up->is_null()) {
    const std::string v = up->is_string() ? up->get<std::string>() : std::string{};
    if (v == "block") s.unknown_price = UnknownPricePolicy::block;
    else if (v == "allow" || v == "allow_and_flag" || v == "flag") s.unknown_price = UnknownPricePolicy::allow_and_flag;
    else return fail(ErrorKind::invalid_config, "unknown_price must be \"block\" or \"allow\"", path + ".unknown_price");
  }
  return s;
}

}  // namespace

Result<std::vector<BudgetSpec>> parse_budgets(const Json& budgets, const std::string& path) {
  std::vector<BudgetSpec> out;
  if (budgets.is_null()) return out;
  if (!budgets.is_array()) return fail(ErrorKind::invalid_config, "budgets must be an array", path);
  std::set<std::string> names;
  for (std::size_t i = 0; i < budgets.size(); ++i) {
    const std::string p = path + "[" + std::to_string(i) + "]";
    auto s = parse_one(budgets[i], p);
    if (!s) return fail(s.error());
    if (!names.insert(s->name).second)
      return fail(ErrorKind::invalid_config, "duplicate budget name '" + s->name + "'", p + ".name");
    out.push_back(std::move(*s));
  }
  return out;
}

}  // namespace modelux
