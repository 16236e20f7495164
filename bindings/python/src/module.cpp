// modelux._core: version, catalog, cost, and the exception translation every binding shares.
// The public Python API is the pure-Python package `modelux` on top of this module.
#include <pybind11/stl.h>

#include "common.hpp"

namespace modelux::python {

Json parse_text(std::string_view text, std::string_view what) {
  auto j = parse_json(text);
  if (!j) {
    Error e = j.error();
    e.kind = ErrorKind::bad_request;
    e.message = std::string(what) + " is not valid JSON: " + e.message;
    throw PyError(std::move(e));
  }
  return std::move(*j);
}

Json catalog_to_json(const Catalog& c) {
  Json providers = Json::array();
  for (const auto& p : c.providers())
    providers.push_back({{"name", p.name},
                         {"family", p.family},
                         {"base_url", p.base_url},
                         {"auth_style", p.auth_style},
                         {"key_env", p.key_env}});
  Json models = Json::array();
  for (const auto& m : c.models()) {
    Json j = {{"id", m.id},
              {"provider", m.provider},
              {"upstream", m.upstream.empty() ? m.id : m.upstream},
              {"priced", m.priced},
              {"input_per_m", nullptr},
              {"output_per_m", nullptr},
              {"cached_input_per_m", nullptr},
              {"cache_write_per_m", nullptr},
              {"context_window", m.context_window},
              {"max_output", m.max_output},
              {"quality_tier", m.quality_tier},
              {"source", m.source}};
    // An unpriced model has no prices, not zero prices: None in Python.
    if (m.priced) {
      j["input_per_m"] = m.input_per_m;
      j["output_per_m"] = m.output_per_m;
      j["cached_input_per_m"] = m.cached_input_per_m;
      j["cache_write_per_m"] = m.cache_write_per_m;
    }
    models.push_back(std::move(j));
  }
  return {{"as_of", std::string(c.as_of())}, {"providers", std::move(providers)}, {"models", std::move(models)}};
}

double cost_usd(const Catalog& c, const std::string& model, std::int64_t prompt_tokens, std::int64_t completion_tokens,
                std::int64_t cached_tokens, std::int64_t cache_write_tokens) {
  if (prompt_tokens < 0 || completion_tokens < 0 || cached_tokens < 0 || cache_write_tokens < 0)
    throw PyError(fail(ErrorKind::bad_request, "token counts must not be negative").error());
  if (cached_tokens + cache_write_tokens > prompt_tokens)
    throw PyError(fail(ErrorKind::bad_request,
                       "cached_tokens + cache_write_tokens must not exceed prompt_tokens (prompt_tokens counts all input)")
                      .error());
  const ModelInfo* m = c.find_model(model);
  if (!m) throw PyError(fail(ErrorKind::not_found, "unknown model '" + model + "' (not in the catalog)").error());
  if (!m->priced) {
    Error e = fail(ErrorKind::not_found, "model '" + model + "' has no known list price in the catalog").error();
    e.code = "unpriced";
    throw PyError(std::move(e));
  }
  Usage u;
  u.prompt_tokens = prompt_tokens;
  u.completion_tokens = completion_tokens;
  u.cached_tokens = cached_tokens;
  u.cache_write_tokens = cache_write_tokens;
  return Catalog::cost(*m, u).total();
}

namespace {

void translate(const PyError& e) {
  const Error& err = e.error;
  py::object retry_after = py::none();
  if (err.retry_after) retry_after = py::float_(static_cast<double>(err.retry_after->count()) / 1000.0);
  py::object trace = e.trace_json.empty() ? py::object(py::none()) : py::object(py::str(e.trace_json));
  py::object make = py::module_::import("modelux._errors").attr("_from_core");
  py::object exc = make(std::string(to_string(err.kind)), err.message, err.status, err.path, retry_after, err.provider,
                        err.code, trace);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
}

}  // namespace

}  // namespace modelux::python

PYBIND11_MODULE(_core, m) {
  namespace mp = modelux::python;
  using modelux::python::py::arg;
  m.doc() = "modelux native core (use the `modelux` package, not this module directly)";

  mp::py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const mp::PyError& e) {
      mp::translate(e);
    }
  });

  m.def("version", [] { return std::string(modelux::version()); }, "The C++ library version.");
  m.def("catalog_json", [] { return mp::catalog_to_json(modelux::Catalog::builtin()).dump(); },
        "The built-in catalog as JSON text.");
  m.def(
      "cost",
      [](const std::string& model, std::int64_t prompt_tokens, std::int64_t completion_tokens,
         std::int64_t cached_tokens, std::int64_t cache_write_tokens) {
        return mp::cost_usd(modelux::Catalog::builtin(), model, prompt_tokens, completion_tokens, cached_tokens,
                            cache_write_tokens);
      },
      arg("model"), arg("prompt_tokens"), arg("completion_tokens"), arg("cached_tokens"), arg("cache_write_tokens"),
      "USD cost of one call at the built-in catalog's list prices.");
  m.def("error_kinds", [] {
    std::vector<std::string> v;
    for (int i = 0;; ++i) {
      auto k = static_cast<modelux::ErrorKind>(i);
      std::string name(modelux::to_string(k));
      if (!modelux::error_kind_from_string(name) || *modelux::error_kind_from_string(name) != k) break;
      v.push_back(std::move(name));
    }
    return v;
  }, "Every ErrorKind name, in declaration order.");

  mp::bind_router(m);
  mp::bind_simulate(m);
  mp::bind_replay(m);
  mp::bind_store(m);
}
