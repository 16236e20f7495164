// Internal: Transport::send in terms of Transport::open, for every transport: the response
// head, then the whole body. One implementation, so that the HTTP client and the simulated
// transport of the mock provider read a whole response the same way.
//
// Threading: as the transport's open() and the stream's read_all().
#pragma once

#include "modelux/transport.hpp"

namespace modelux {

/// Opens `req` on `t` and reads the whole body by `deadline`.
net::awaitable<Result<HttpResponse>> send_and_read_all(Transport& t, const HttpRequestSpec& req, Instant deadline);

}  // namespace modelux
