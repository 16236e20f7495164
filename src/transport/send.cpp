// Transport::send in terms of open() (see send.hpp).
#include "transport/send.hpp"

namespace modelux {

net::awaitable<Result<HttpResponse>> send_and_read_all(Transport& t, const HttpRequestSpec& req, Instant deadline) {
  auto s = co_await t.open(req, deadline);
  if (!s) co_return std::unexpected(s.error());
  HttpResponse r;
  r.status = (*s)->status();
  r.headers = (*s)->headers();
  auto body = co_await (*s)->read_all(deadline);
  if (!body) co_return std::unexpected(body.error());
  r.body = std::move(*body);
  co_return r;
}

}  // namespace modelux
