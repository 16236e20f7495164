// What every data-plane ingress (OpenAI chat completions and embeddings, Anthropic messages) checks and
// builds the same way before it hands a request to the Router: the key's model and config
// allowlists, the end user, tags and metadata limits → the CallContext; and the retry headers
// an error carries back. Each ingress renders a Refusal in its own error shape.
//
// Threading: pure functions of their arguments; called on the connection's strand.
#pragma once

#include <expected>

#include "server/routes.hpp"

namespace modelux::proxy {

/// Why a request is refused at the edge: the HTTP status and the error (code and param set).
struct Refusal {
  int status = 400;
  Error error;
};

/// The CallContext for `creq` (key, project, end user, tags), or why the caller may not send
/// it. A fresh request id and cancellation token are set.
std::expected<CallContext, Refusal> edge_context(const RouteCtx& c, const ChatRequest& creq);
/// The same for any request that names a model, an end user and (a null Json: none) metadata,
/// such as an embeddings request.
std::expected<CallContext, Refusal> edge_context(const RouteCtx& c, const std::string& model, const std::string& user,
                                                 const Json& metadata);

/// A refusal in OpenAI's error shape.
Reply openai_refusal(const Refusal& r);

/// retry-after and retry-after-ms from an error's retry hint (OpenAI's and Anthropic's SDKs
/// both read them), appended to `h`.
Headers with_retry_after(Headers h, const Error& e);

}  // namespace modelux::proxy
