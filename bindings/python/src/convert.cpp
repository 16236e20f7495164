// See convert.hpp. Why not to_json + json_to_py: that builds every node twice (a std::map per
// object, then a dict), which was the larger part of Router.chat's own cost per request.
#include "convert.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>

#include "common.hpp"

namespace modelux::python {

namespace {

/// Interned key strings, created once (with the GIL: the first caller holds it).
struct Keys {
  PyObject *arguments, *cache_write_tokens, *cached_tokens, *choices, *completion_tokens, *completion_tokens_details,
      *content, *created, *finish_reason, *function, *id, *index, *logprobs, *message, *model, *name, *object,
      *prompt_tokens, *prompt_tokens_details, *reasoning_tokens, *refusal, *role, *system_fingerprint, *tool_call_id,
      *tool_calls, *total_tokens, *type, *usage;
  PyObject *v_chat_completion, *v_function;
};

PyObject* intern(const char* s) {
  PyObject* o = PyUnicode_InternFromString(s);
  if (!o) throw py::error_already_set();
  return o;  // immortal for our purposes: never released
}

const Keys& keys() {
  static const Keys k = [] {
    Keys x{};
#define MODELUX_KEY(n) x.n = intern(#n)
    MODELUX_KEY(arguments); MODELUX_KEY(cache_write_tokens); MODELUX_KEY(cached_tokens); MODELUX_KEY(choices);
    MODELUX_KEY(completion_tokens); MODELUX_KEY(completion_tokens_details); MODELUX_KEY(content);
    MODELUX_KEY(created); MODELUX_KEY(finish_reason); MODELUX_KEY(function); MODELUX_KEY(id); MODELUX_KEY(index);
    MODELUX_KEY(logprobs); MODELUX_KEY(message); MODELUX_KEY(model); MODELUX_KEY(name); MODELUX_KEY(object);
    MODELUX_KEY(prompt_tokens); MODELUX_KEY(prompt_tokens_details); MODELUX_KEY(reasoning_tokens);
    MODELUX_KEY(refusal); MODELUX_KEY(role); MODELUX_KEY(system_fingerprint); MODELUX_KEY(tool_call_id);
    MODELUX_KEY(tool_calls); MODELUX_KEY(total_tokens); MODELUX_KEY(type); MODELUX_KEY(usage);
#undef MODELUX_KEY
    x.v_chat_completion = intern("chat.completion");
    x.v_function = intern("function");
    return x;
  }();
  return k;
}

/// A new reference or error_already_set.
PyObject* checked(PyObject* o) {
  if (!o) throw py::error_already_set();
  return o;
}
/// A str as json_to_py makes it (invalid UTF-8 replaced).
PyObject* str(const std::string& s) {
  return checked(PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace"));
}
PyObject* integer(std::int64_t v) { return checked(PyLong_FromLongLong(v)); }
PyObject* none() { Py_RETURN_NONE; }

/// d[key] = value, stealing `value`.
void put(PyObject* d, PyObject* key, PyObject* value) {
  int rc = PyDict_SetItem(d, key, value);
  Py_DECREF(value);
  if (rc != 0) throw py::error_already_set();
}

/// A new dict; an owner that releases it if filling it throws.
struct NewDict {
  PyObject* p = checked(PyDict_New());
  ~NewDict() { Py_XDECREF(p); }
  PyObject* release() { return std::exchange(p, nullptr); }
};

PyObject* message_to_py(const Message& m) {
  const Keys& k = keys();
  const bool null_content = m.content_null && m.content.empty();
  if (!null_content && !m.content_is_string) {
    // Content parts in a response are rare: the generic path.
    Json j = to_json(m);
    if (!j.contains("refusal")) j["refusal"] = nullptr;
    return json_to_py(j).release().ptr();
  }
  NewDict d;
  put(d.p, k.content, null_content ? none() : str(m.text()));
  if (!m.name.empty()) put(d.p, k.name, str(m.name));
  put(d.p, k.refusal, m.refusal ? str(*m.refusal) : none());
  put(d.p, k.role, str(m.role));
  if (!m.tool_call_id.empty()) put(d.p, k.tool_call_id, str(m.tool_call_id));
  if (!m.tool_calls.empty()) {
    PyObject* list = checked(PyList_New(0));
    py::object own = py::reinterpret_steal<py::object>(list);
    for (const auto& tc : m.tool_calls) {
      NewDict fn;
      put(fn.p, k.arguments, str(tc.arguments));
      put(fn.p, k.name, str(tc.name));
      NewDict t;
      put(t.p, k.function, fn.release());
      put(t.p, k.id, str(tc.id));
      Py_INCREF(k.v_function);
      put(t.p, k.type, k.v_function);
      PyObject* item = t.release();
      int rc = PyList_Append(list, item);
      Py_DECREF(item);
      if (rc != 0) throw py::error_already_set();
    }
    put(d.p, k.tool_calls, own.release().ptr());
  }
  return d.release();
}

PyObject* usage_to_py(const Usage& u) {
  const Keys& k = keys();
  NewDict d;
  put(d.p, k.completion_tokens, integer(u.completion_tokens));
  {
    NewDict det;
    put(det.p, k.reasoning_tokens, integer(u.reasoning_tokens));
    put(d.p, k.completion_tokens_details, det.release());
  }
  put(d.p, k.prompt_tokens, integer(u.prompt_tokens));
  {
    NewDict det;
    if (u.cache_write_tokens) put(det.p, k.cache_write_tokens, integer(u.cache_write_tokens));
    put(det.p, k.cached_tokens, integer(u.cached_tokens));
    put(d.p, k.prompt_tokens_details, det.release());
  }
  put(d.p, k.total_tokens, integer(u.total()));
  return d.release();
}

/// The UTF-8 of a str, or false (any Python error cleared).
bool utf8(PyObject* o, std::string& out) {
  if (!PyUnicode_Check(o)) return false;
  Py_ssize_t n = 0;
  const char* s = PyUnicode_AsUTF8AndSize(o, &n);
  if (!s) {
    PyErr_Clear();
    return false;
  }
  out.assign(s, static_cast<std::size_t>(n));
  return true;
}

/// An int that fits int64 (not a bool), or false.
bool int64(PyObject* o, std::int64_t& out) {
  if (!PyLong_CheckExact(o)) return false;
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
  if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
    PyErr_Clear();
    return false;
  }
  out = v;
  return true;
}

/// One message dict of string fields among role, content, name (role not tool: that needs a
/// tool_call_id), as message_from_json would decode it.
bool simple_message(PyObject* o, Message& m) {
  if (!PyDict_CheckExact(o)) return false;
  const Keys& k = keys();
  Py_ssize_t size = PyDict_GET_SIZE(o);
  PyObject* role = PyDict_GetItemWithError(o, k.role);
  PyObject* content = role ? PyDict_GetItemWithError(o, k.content) : nullptr;
  if (!role || !content) {
    PyErr_Clear();
    return false;
  }
  PyObject* name = nullptr;
  if (size == 3) {
    name = PyDict_GetItemWithError(o, k.name);
    if (!name) {
      PyErr_Clear();
      return false;
    }
  } else if (size != 2) {
    return false;
  }
  if (!utf8(role, m.role)) return false;
  static constexpr std::string_view kRoles[] = {"system", "developer", "user", "assistant", "function"};
  if (std::find(std::begin(kRoles), std::end(kRoles), m.role) == std::end(kRoles)) return false;
  ContentPart part;
  if (!utf8(content, part.text)) return false;
  m.content.push_back(std::move(part));
  if (name && !utf8(name, m.name)) return false;
  return true;
}

}  // namespace

std::optional<ChatRequest> simple_request_from_py(PyObject* model, PyObject* messages, PyObject* params) {
  ChatRequest r;
  if (!utf8(model, r.model) || r.model.empty()) return std::nullopt;
  if (!PyList_CheckExact(messages) && !PyTuple_CheckExact(messages)) return std::nullopt;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(messages);
  if (n == 0) return std::nullopt;
  r.messages.resize(static_cast<std::size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i)
    if (!simple_message(PySequence_Fast_GET_ITEM(messages, i), r.messages[static_cast<std::size_t>(i)]))
      return std::nullopt;
  if (params == Py_None) return r;
  if (!PyDict_CheckExact(params)) return std::nullopt;
  PyObject *key = nullptr, *v = nullptr;
  Py_ssize_t pos = 0;
  bool have_max = false;
  while (PyDict_Next(params, &pos, &key, &v)) {
    if (!PyUnicode_Check(key)) return std::nullopt;
    Py_ssize_t len = 0;
    const char* ks = PyUnicode_AsUTF8AndSize(key, &len);
    if (!ks) {
      PyErr_Clear();
      return std::nullopt;
    }
    std::string_view kv(ks, static_cast<std::size_t>(len));
    if (v == Py_None) {
      // null is "absent" for these fields in chat_request_from_json; others take the generic path.
      if (kv == "temperature" || kv == "top_p" || kv == "max_tokens" || kv == "max_completion_tokens" || kv == "n" ||
          kv == "seed" || kv == "user")
        continue;
      return std::nullopt;
    }
    if (kv == "temperature" || kv == "top_p") {
      double d = 0;
      if (PyFloat_CheckExact(v)) {
        d = PyFloat_AS_DOUBLE(v);
      } else {
        std::int64_t i = 0;
        if (!int64(v, i)) return std::nullopt;
        d = static_cast<double>(i);
      }
      (kv == "temperature" ? r.temperature : r.top_p) = d;
    } else if (kv == "max_tokens" || kv == "max_completion_tokens") {
      std::int64_t i = 0;
      if (have_max || !int64(v, i) || i < 1) return std::nullopt;  // both given: the generic path's rule
      have_max = true;
      r.max_tokens = i;
      r.max_tokens_is_completion = (kv == "max_completion_tokens");
    } else if (kv == "n" || kv == "seed") {
      std::int64_t i = 0;
      if (!int64(v, i)) return std::nullopt;
      (kv == "n" ? r.n : r.seed) = i;
    } else if (kv == "user") {
      if (!utf8(v, r.user)) return std::nullopt;
    } else {
      return std::nullopt;
    }
  }
  return r;
}

void fill_chat_completion(PyObject* d, const ChatResponse& r) {
  const Keys& k = keys();
  PyObject* choices = checked(PyList_New(static_cast<Py_ssize_t>(r.choices.size())));
  py::object own = py::reinterpret_steal<py::object>(choices);
  for (std::size_t i = 0; i < r.choices.size(); ++i) {
    const Choice& c = r.choices[i];
    NewDict cd;
    put(cd.p, k.finish_reason, c.finish_reason.empty() ? none() : str(c.finish_reason));
    put(cd.p, k.index, integer(c.index));
    put(cd.p, k.logprobs, none());
    put(cd.p, k.message, message_to_py(c.message));
    PyList_SET_ITEM(choices, static_cast<Py_ssize_t>(i), cd.release());
  }
  put(d, k.choices, own.release().ptr());
  put(d, k.created, integer(r.created));
  put(d, k.id, str(r.id));
  put(d, k.model, str(r.model));
  Py_INCREF(k.v_chat_completion);
  put(d, k.object, k.v_chat_completion);
  if (!r.system_fingerprint.empty()) put(d, k.system_fingerprint, str(r.system_fingerprint));
  put(d, k.usage, usage_to_py(r.usage));
}

}  // namespace modelux::python
