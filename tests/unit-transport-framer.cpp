// The HTTP client's body framer (src/transport/body_framer.hpp): chunked and Content-Length
// bodies decoded from bytes in any split, strict on bad framing.
#include <doctest/doctest.h>

#include <string>

#include "transport/body_framer.hpp"

using modelux::transport::BodyFramer;

namespace {

struct Fed {
  std::string body;
  std::size_t consumed = 0;
  bool done = false, error = false;
};

// Feeds `wire` in pieces of `step` bytes, as reads would deliver them; a piece the framer did
// not consume is offered again with the next bytes (as the connection's buffer keeps them).
Fed feed_in_steps(BodyFramer f, std::string_view wire, std::size_t step) {
  Fed r;
  std::string pending;
  for (std::size_t i = 0; i < wire.size() && !f.done() && !f.error(); i += step) {
    pending.append(wire.substr(i, step));
    std::size_t used = f.feed(pending, &r.body);
    r.consumed += used;
    pending.erase(0, used);
  }
  r.done = f.done();
  r.error = f.error();
  return r;
}

}  // namespace

TEST_CASE("framer decodes a chunked body split at every byte") {
  const std::string wire = "5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
  for (std::size_t step = 1; step <= wire.size(); ++step) {
    Fed r = feed_in_steps(BodyFramer::chunked(), wire, step);
    CHECK(r.done);
    CHECK_FALSE(r.error);
    CHECK(r.body == "helloabcdefghijklmnopqrstuvwxyz");
    CHECK(r.consumed == wire.size());
  }
}

TEST_CASE("framer stops at the end of the body and skips trailers") {
  BodyFramer f = BodyFramer::chunked();
  std::string out;
  const std::string wire = "3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\nHTTP/1.1 200 OK\r\n";
  std::size_t used = f.feed(wire, &out);
  CHECK(f.done());
  CHECK(out == "abc");
  CHECK(wire.substr(used) == "HTTP/1.1 200 OK\r\n");  // the next response is not consumed
}

TEST_CASE("framer with no output buffer discards the body") {
  BodyFramer f = BodyFramer::chunked();
  CHECK(f.feed("2\r\nab\r\n0\r\n\r\n", nullptr) == 12);
  CHECK(f.done());
}

TEST_CASE("framer decodes a Content-Length body") {
  for (std::size_t step = 1; step <= 11; ++step) {
    Fed r = feed_in_steps(BodyFramer::with_length(11), "hello world and more", step);
    CHECK(r.done);
    CHECK(r.body == "hello world");
    CHECK(r.consumed == 11);
  }
  BodyFramer empty = BodyFramer::with_length(0);
  CHECK(empty.done());
}

TEST_CASE("framer refuses bad chunk framing") {
  for (std::string_view bad : {"x\r\n", "\r\n", "5\nhello\r\n", "5\r\nhelloXY", "5\r\nhello\rX", "0\r\n\rX",
                               "1234567890abcdef0\r\n", "-1\r\n"}) {
    CAPTURE(bad);
    BodyFramer f = BodyFramer::chunked();
    std::string out;
    f.feed(bad, &out);
    CHECK(f.error());
    CHECK_FALSE(f.done());
    CHECK(f.feed("0\r\n\r\n", &out) == 0);  // nothing more is consumed after an error
  }
}

TEST_CASE("framer keeps an incomplete chunk pending") {
  BodyFramer f = BodyFramer::chunked();
  std::string out;
  CHECK(f.feed("a\r\n01234", &out) == 8);
  CHECK(out == "01234");
  CHECK_FALSE(f.done());
  CHECK_FALSE(f.error());
  CHECK(f.feed("56789\r\n", &out) == 7);
  CHECK(out == "0123456789");
  CHECK_FALSE(f.done());
}
