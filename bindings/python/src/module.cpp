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

Json py_to_json_at(PyObject* o, int depth) {
  if (depth > 512) throw PyError(fail(ErrorKind::bad_request, "the request is nested too deeply").error());
  if (o == Py_None) return nullptr;
  if (PyBool_Check(o)) return o == Py_True;
  if (PyLong_Check(o)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow == 0) return static_cast<std::int64_t>(v);
    if (overflow > 0) {
      unsigned long long u = PyLong_AsUnsignedLongLong(o);
      if (!(u == static_cast<unsigned long long>(-1) && PyErr_Occurred())) return static_cast<std::uint64_t>(u);
      PyErr_Clear();
    }
    double d = PyLong_AsDouble(o);  // what the JSON text of a huge int would have parsed to
    if (d == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    return d;
  }
  if (PyFloat_Check(o)) return PyFloat_AS_DOUBLE(o);
  if (PyUnicode_Check(o)) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s) throw py::error_already_set();
    return std::string(s, static_cast<std::size_t>(n));
  }
  if (PyDict_Check(o)) {
    Json out = Json::object();
    PyObject *k = nullptr, *v = nullptr;
    Py_ssize_t pos = 0;
    while (PyDict_Next(o, &pos, &k, &v)) {
      if (!PyUnicode_Check(k))
        throw py::type_error(std::string("keys must be str, not ") + Py_TYPE(k)->tp_name);
      Py_ssize_t n = 0;
      const char* s = PyUnicode_AsUTF8AndSize(k, &n);
      if (!s) throw py::error_already_set();
      out[std::string(s, static_cast<std::size_t>(n))] = py_to_json_at(v, depth + 1);
    }
    return out;
  }
  if (PyList_Check(o) || PyTuple_Check(o)) {
    PyObject* seq = o;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Json out = Json::array();
    out.get_ref<Json::array_t&>().reserve(static_cast<std::size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) out.push_back(py_to_json_at(PySequence_Fast_GET_ITEM(seq, i), depth + 1));
    return out;
  }
  throw py::type_error(std::string("Object of type ") + Py_TYPE(o)->tp_name + " is not JSON serializable");
}

PyObject* json_to_py_raw(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null:
      Py_RETURN_NONE;
    case Json::value_t::boolean:
      return PyBool_FromLong(j.get<bool>() ? 1 : 0);
    case Json::value_t::number_integer:
      return PyLong_FromLongLong(j.get<std::int64_t>());
    case Json::value_t::number_unsigned:
      return PyLong_FromUnsignedLongLong(j.get<std::uint64_t>());
    case Json::value_t::number_float:
      return PyFloat_FromDouble(j.get<double>());
    case Json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
    }
    case Json::value_t::array: {
      const auto& a = j.get_ref<const Json::array_t&>();
      PyObject* out = PyList_New(static_cast<Py_ssize_t>(a.size()));
      if (!out) return nullptr;
      for (std::size_t i = 0; i < a.size(); ++i) {
        PyObject* v = json_to_py_raw(a[i]);
        if (!v) {
          Py_DECREF(out);
          return nullptr;
        }
        PyList_SET_ITEM(out, static_cast<Py_ssize_t>(i), v);
      }
      return out;
    }
    case Json::value_t::object: {
      PyObject* out = PyDict_New();
      if (!out) return nullptr;
      for (const auto& [k, v] : j.items()) {
        PyObject* key = PyUnicode_DecodeUTF8(k.data(), static_cast<Py_ssize_t>(k.size()), "replace");
        PyObject* val = key ? json_to_py_raw(v) : nullptr;
        int rc = val ? PyDict_SetItem(out, key, val) : -1;
        Py_XDECREF(key);
        Py_XDECREF(val);
        if (rc != 0) {
          Py_DECREF(out);
          return nullptr;
        }
      }
      return out;
    }
    default:
      Py_RETURN_NONE;
  }
}

void translate(const PyError& e) {
  py::object exc = exception_object(e);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
}

}  // namespace

Json py_to_json(py::handle o) { return py_to_json_at(o.ptr(), 0); }

py::object json_to_py(const Json& j) {
  PyObject* o = json_to_py_raw(j);
  if (!o) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(o);
}

py::object exception_object(const PyError& e) {
  const Error& err = e.error;
  py::object retry_after = py::none();
  if (err.retry_after) retry_after = py::float_(static_cast<double>(err.retry_after->count()) / 1000.0);
  py::object trace = e.trace_json.empty() ? py::object(py::none()) : py::object(py::str(e.trace_json));
  py::object make = py::module_::import("modelux._errors").attr("_from_core");
  return make(std::string(to_string(err.kind)), err.message, err.status, err.path, retry_after, err.provider, err.code,
              trace);
}

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
