// A scripted HTTP server on a raw socket, for transport tests that need answers no real server
// gives (oversized bodies or headers, a keep-alive connection closed behind the client's back).
// It accepts connections one after another on a thread and hands each to `script` with its
// index; the script reads requests and writes whatever bytes it wants.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

namespace modelux::test {

class RawServer {
 public:
  using tcp = boost::asio::ip::tcp;
  using Script = std::function<void(tcp::socket&, int index)>;

  /// Serves `connections` connections, then stops accepting.
  RawServer(int connections, Script script) : script_(std::move(script)) {
    thread_ = std::thread([this, connections] {
      for (int i = 0; i < connections; ++i) {
        tcp::socket s(io_);
        boost::system::error_code ec;
        acceptor_.accept(s, ec);
        if (ec || stopping_.load()) return;
        accepted_.fetch_add(1);
        script_(s, i);
      }
    });
  }
  ~RawServer() {
    // A pending accept (fewer connections came than expected) is woken by one last connection.
    stopping_.store(true);
    boost::system::error_code ec;
    tcp::socket wake(io_);
    wake.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  int port() const { return acceptor_.local_endpoint().port(); }
  std::string url(const std::string& path = "/") const { return "http://127.0.0.1:" + std::to_string(port()) + path; }
  int accepted() const { return accepted_.load(); }

  /// Reads one request (head and Content-Length body); "" when the peer closed first.
  static std::string read_request(tcp::socket& s) {
    boost::asio::streambuf buf;
    boost::system::error_code ec;
    std::size_t n = boost::asio::read_until(s, buf, "\r\n\r\n", ec);
    if (ec) return {};
    std::string all(boost::asio::buffers_begin(buf.data()), boost::asio::buffers_end(buf.data()));
    std::string head = all.substr(0, n);
    std::size_t len = 0;
    for (const char* name : {"Content-Length: ", "content-length: "})
      if (auto p = head.find(name); p != std::string::npos) len = std::stoul(head.substr(p + 16));
    std::size_t have = all.size() - n;
    if (have < len) {
      std::string rest(len - have, '\0');
      boost::asio::read(s, boost::asio::buffer(rest), ec);
      all += rest;
    }
    return all;
  }
  static void write(tcp::socket& s, const std::string& bytes) {
    boost::system::error_code ec;
    boost::asio::write(s, boost::asio::buffer(bytes), ec);
  }

 private:
  boost::asio::io_context io_;
  tcp::acceptor acceptor_{io_, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0)};
  Script script_;
  std::atomic<int> accepted_{0};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace modelux::test
