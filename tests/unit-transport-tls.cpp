// TLS as documented in docs/executor.md: certificates verified by default, SNI, host-name
// check, `TransportOptions::ca_file`. Against a local HTTPS server whose CA the test makes with
// the `openssl` command line tool (a throwaway CA per run, in the build tree).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>

#include "modelux/transport.hpp"

using namespace modelux;
using tcp = net::ip::tcp;
namespace ssl = net::ssl;
namespace fs = std::filesystem;

namespace {

// A CA and two leaf certificates it signed: one for localhost, one for another host name.
struct Pki {
  fs::path dir;
  Pki() {
    dir = fs::temp_directory_path() / "modelux-test-tmp" / ("tls-" + new_request_id());
    fs::create_directories(dir);
    run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj '/CN=modelux test CA'"
        " -keyout ca.key -out ca.pem");
    leaf("localhost");
    leaf("other.example");
  }
  ~Pki() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  void leaf(const std::string& host) {
    std::ofstream(dir / (host + ".ext")) << "subjectAltName=DNS:" << host << "\n";
    run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=" + host + "' -keyout " + host +
        ".key -out " + host + ".csr");
    run("openssl x509 -req -in " + host + ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile " + host +
        ".ext -out " + host + ".pem");
  }
  void run(const std::string& cmd) {
    std::string full = "cd '" + dir.string() + "' && " + cmd + " >/dev/null 2>&1";
    REQUIRE_MESSAGE(std::system(full.c_str()) == 0, "openssl failed: " << cmd);
  }
  std::string file(const std::string& name) const { return (dir / name).string(); }
};

// An HTTPS server presenting `host`'s certificate; answers each request with a small JSON and
// records the SNI name each client sent.
class TlsServer {
 public:
  TlsServer(const Pki& pki, const std::string& host) : ctx_(ssl::context::tls_server) {
    ctx_.use_certificate_chain_file(pki.file(host + ".pem"));
    ctx_.use_private_key_file(pki.file(host + ".key"), ssl::context::pem);
    thread_ = std::thread([this] {
      for (;;) {
        tcp::socket s(io_);
        boost::system::error_code ec;
        acceptor_.accept(s, ec);
        if (ec || stopping_) return;
        ssl::stream<tcp::socket> tls(std::move(s), ctx_);
        tls.handshake(ssl::stream_base::server, ec);
        if (ec) {
          failed_handshakes_.fetch_add(1);
          continue;
        }
        if (const char* sni = SSL_get_servername(tls.native_handle(), TLSEXT_NAMETYPE_host_name)) sni_ = sni;
        net::streambuf buf;
        net::read_until(tls, buf, "\r\n\r\n", ec);
        if (ec) continue;
        std::string body = R"({"tls":true})";
        std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n" + body;
        net::write(tls, net::buffer(resp), ec);
        served_.fetch_add(1);
        tls.shutdown(ec);
      }
    });
  }
  ~TlsServer() {
    stopping_ = true;
    boost::system::error_code ec;
    tcp::socket wake(io_);
    wake.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  std::string url() const { return "https://localhost:" + std::to_string(acceptor_.local_endpoint().port()) + "/v1/x"; }
  std::string sni() const { return sni_; }
  int served() const { return served_.load(); }
  int failed_handshakes() const { return failed_handshakes_.load(); }

 private:
  net::io_context io_;
  ssl::context ctx_;
  tcp::acceptor acceptor_{io_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)};
  std::atomic<bool> stopping_{false};
  std::atomic<int> served_{0}, failed_handshakes_{0};
  std::string sni_;  // written by the server thread before served_ is bumped
  std::thread thread_;
};

Result<HttpResponse> get(const std::string& url, TransportOptions o) {
  net::io_context io;
  auto tr = make_http_transport(io.get_executor(), std::move(o));
  HttpRequestSpec req;
  req.method = "GET";
  req.url = url;
  auto fut = net::co_spawn(io, tr->send(req, std::chrono::steady_clock::now() + std::chrono::seconds(10)), net::use_future);
  io.run();
  return fut.get();
}

}  // namespace

TEST_CASE("TLS: with ca_file the local CA is trusted, and SNI names the host") {
  Pki pki;
  TlsServer srv(pki, "localhost");
  TransportOptions o;
  o.ca_file = pki.file("ca.pem");
  auto r = get(srv.url(), o);
  REQUIRE_MESSAGE(r, (r ? std::string{} : r.error().message));
  CHECK(r->status == 200);
  CHECK(r->body == R"({"tls":true})");
  CHECK(srv.sni() == "localhost");
}

TEST_CASE("TLS: verification is on by default, an unknown CA is a clear certificate error") {
  Pki pki;
  TlsServer srv(pki, "localhost");
  auto r = get(srv.url(), {});  // system CA store only: the test CA is not in it
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == ErrorKind::connection);
  CHECK_MESSAGE(r.error().message.find("certificate verify failed") != std::string::npos, r.error().message);
  CHECK_MESSAGE(r.error().message.find("localhost") != std::string::npos, r.error().message);
  CHECK(srv.served() == 0);
}

TEST_CASE("TLS: a certificate for another host name is refused even from a trusted CA") {
  Pki pki;
  TlsServer srv(pki, "other.example");
  TransportOptions o;
  o.ca_file = pki.file("ca.pem");
  auto r = get(srv.url(), o);
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == ErrorKind::connection);
  CHECK_MESSAGE(r.error().message.find("TLS handshake with localhost") != std::string::npos, r.error().message);
  CHECK(srv.served() == 0);
  // verify_tls = false is the explicit opt-out: the same server is then accepted.
  o.verify_tls = false;
  CHECK(get(srv.url(), o));
}

TEST_CASE("TLS: a ca_file that cannot be loaded fails HTTPS requests with a message naming it") {
  Pki pki;
  TlsServer srv(pki, "localhost");
  TransportOptions o;
  o.ca_file = pki.file("missing-ca.pem");
  auto r = get(srv.url(), o);
  REQUIRE_FALSE(r);
  CHECK(r.error().kind == ErrorKind::invalid_config);
  CHECK_MESSAGE(r.error().message.find("missing-ca.pem") != std::string::npos, r.error().message);
}
