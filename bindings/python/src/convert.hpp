// Direct conversions between modelux's C++ wire structs and Python objects (CPython API), for
// the per-request hot paths of modelux._core: no nlohmann::Json in between. Each produces
// exactly what json_to_py(to_json(x)) would (same keys, same values, keys in the same sorted
// order as nlohmann's std::map), so Python sees no difference; key strings are interned once.
// Threading: every function needs the GIL.
#pragma once

#include <optional>

#include <pybind11/pybind11.h>

#include "modelux/wire.hpp"

namespace modelux::python {

/// Fills `dict` (a dict or dict subclass instance, empty) with the chat.completion object of `r`.
void fill_chat_completion(PyObject* dict, const ChatResponse& r);

/// The ChatRequest of {"model": model, "messages": messages, **params} for the common simple
/// shape (messages are plain dicts of role/content[/name] strings, params only the scalar
/// sampling fields), built without nlohmann::Json; nullopt for anything else, and for any
/// value chat_request_from_json would reject: the caller then takes the generic path, which
/// accepts or rejects exactly as before. Never leaves a Python error set.
std::optional<ChatRequest> simple_request_from_py(PyObject* model, PyObject* messages, PyObject* params);

}  // namespace modelux::python
