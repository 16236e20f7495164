// Shared by the translation units of modelux._core.
//
// Values cross the boundary as JSON documents: on the hot paths (chat, streams, embeddings)
// Python objects are walked straight into nlohmann::Json and back (py_to_json / json_to_py,
// CPython API, no JSON text in between), so the binding needs no per-type converters and the
// Python objects have exactly the shape the C++ JSON functions define (OpenAI shape for chat,
// DecisionTrace::to_json for traces). Colder paths still pass JSON text. The chat response,
// and a plain chat request, skip nlohmann::Json too (convert.hpp), with the same result.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <pybind11/pybind11.h>

#include "modelux/catalog.hpp"
#include "modelux/core.hpp"

namespace modelux::python {

namespace py = pybind11;

/// A modelux Error on its way to Python. The exception translator (module.cpp) turns it into
/// the matching modelux.ModeluxError subclass; `trace_json` becomes the exception's `.trace`.
class PyError : public std::runtime_error {
 public:
  explicit PyError(Error e, std::string trace_json = {})
      : std::runtime_error(e.describe()), error(std::move(e)), trace_json(std::move(trace_json)) {}
  Error error;
  std::string trace_json;
};

/// Value or PyError.
template <class T>
T unwrap(Result<T> r) {
  if (!r) throw PyError(std::move(r.error()));
  return std::move(*r);
}
inline void unwrap(Result<void> r) {
  if (!r) throw PyError(std::move(r.error()));
}

/// Parses JSON text handed over by the Python layer; a bad_request PyError when it is not JSON.
Json parse_text(std::string_view text, std::string_view what);

/// A Python value (dict with str keys, list, tuple, str, int, float, bool, None: what
/// json.dumps takes) as JSON; TypeError for anything else, as json.dumps would raise. Needs the GIL.
Json py_to_json(py::handle o);
/// A JSON document as Python objects (dict, list, str, int, float, bool, None). Needs the GIL.
py::object json_to_py(const Json& j);

/// The modelux.ModeluxError subclass instance for `e` (what the exception translator raises).
py::object exception_object(const PyError& e);

/// The catalog as {"as_of", "providers": [...], "models": [...]}.
Json catalog_to_json(const Catalog& c);

/// Cost in USD of one call on `model` (raises not_found / unpriced).
double cost_usd(const Catalog& c, const std::string& model, std::int64_t prompt_tokens, std::int64_t completion_tokens,
                std::int64_t cached_tokens, std::int64_t cache_write_tokens);

void bind_router(py::module_& m);
void bind_simulate(py::module_& m);
void bind_replay(py::module_& m);
void bind_store(py::module_& m);

}  // namespace modelux::python
