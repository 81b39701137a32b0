#include "http_client.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace comcl::testing {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string base64(const std::string& in) {
  static const char* const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = static_cast<unsigned char>(in[i]) << 16 | static_cast<unsigned char>(in[i + 1]) << 8 |
                       static_cast<unsigned char>(in[i + 2]);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    const unsigned v = static_cast<unsigned char>(in[i]) << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const unsigned v = static_cast<unsigned char>(in[i]) << 16 | static_cast<unsigned char>(in[i + 1]) << 8;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string lowerCase(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Runs one asynchronous operation to completion. Beast's tcp_stream timeouts apply only to asynchronous
// operations, so every step is started asynchronously and the io_context is run until it completes (the
// stream's expiry guarantees that it does, with beast::error::timeout).
template <typename Start>
beast::error_code runOne(asio::io_context& ioc, Start&& start) {
  beast::error_code result = asio::error::would_block;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

// A socket file descriptor closed on every path.
class Socket {
 public:
  Socket() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (fd_ < 0)
      throw std::runtime_error(std::string("socket() failed: ") + std::strerror(errno));
  }
  ~Socket() { ::close(fd_); }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

nlohmann::json HttpResponse::json() const {
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    constexpr std::size_t kQuoted = 4000;
    throw std::runtime_error("HTTP response (status " + std::to_string(status) +
                             ") is not JSON: " + e.what() + "; body: " + body.substr(0, kQuoted) +
                             (body.size() > kQuoted ? "..." : ""));
  }
}

HttpClient::HttpClient(int port, std::optional<std::pair<std::string, std::string>> basicAuth,
                       std::chrono::milliseconds timeout)
    : port_(port), timeout_(timeout) {
  if (port <= 0 || port > 65535)
    throw std::invalid_argument("HttpClient: bad port " + std::to_string(port));
  if (basicAuth)
    authorization_ = "Basic " + base64(basicAuth->first + ":" + basicAuth->second);
}

HttpResponse HttpClient::get(const std::string& path) const {
  return request("GET", path, nullptr, "");
}

HttpResponse HttpClient::post(const std::string& path, const std::string& body,
                              const std::string& contentType) const {
  return request("POST", path, &body, contentType);
}

HttpResponse HttpClient::put(const std::string& path, const std::string& body,
                             const std::string& contentType) const {
  return request("PUT", path, &body, contentType);
}

HttpResponse HttpClient::del(const std::string& path) const {
  return request("DELETE", path, nullptr, "");
}

HttpResponse HttpClient::request(const std::string& method, const std::string& path, const std::string* body,
                                 const std::string& contentType) const {
  const std::string what = method + " http://127.0.0.1:" + std::to_string(port_) + path;
  const auto fail = [&what](const char* step, const beast::error_code& ec) {
    return std::runtime_error("HTTP " + what + ": " + step + " failed: " + ec.message());
  };

  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  const tcp::endpoint endpoint(asio::ip::address_v4::loopback(), static_cast<unsigned short>(port_));

  stream.expires_after(timeout_);
  if (auto ec = runOne(ioc, [&](auto handler) { stream.async_connect(endpoint, handler); }))
    throw fail("connect", ec);

  http::request<http::string_body> req(http::string_to_verb(method), path, 11);
  req.set(http::field::host, "127.0.0.1:" + std::to_string(port_));
  req.set(http::field::user_agent, "comcl-test-harness");
  req.set(http::field::connection, "close");
  if (!authorization_.empty())
    req.set(http::field::authorization, authorization_);
  if (body) {
    req.set(http::field::content_type, contentType);
    req.body() = *body;
  }
  req.prepare_payload();

  stream.expires_after(timeout_);
  if (auto ec = runOne(ioc, [&](auto handler) { http::async_write(stream, req, handler); }))
    throw fail("write", ec);

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  stream.expires_after(timeout_);
  if (auto ec = runOne(ioc, [&](auto handler) { http::async_read(stream, buffer, parser, handler); }))
    throw fail("read", ec);

  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);

  http::response<http::string_body> res = parser.release();
  HttpResponse out;
  out.status = static_cast<int>(res.result_int());
  out.body = std::move(res.body());
  for (const auto& field : res) {
    const std::string name = lowerCase(std::string(field.name_string()));
    const std::string value(field.value());
    auto [it, inserted] = out.headers.emplace(name, value);
    if (!inserted)
      it->second += ", " + value;
  }
  return out;
}

std::vector<int> freeLoopbackPorts(std::size_t count) {
  std::vector<Socket> sockets(count);  // held open until every port is chosen, so no port repeats
  std::vector<int> ports;
  for (const Socket& s : sockets) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    if (::bind(s.fd(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
      throw std::runtime_error(std::string("bind(127.0.0.1:0) failed: ") + std::strerror(errno));
    socklen_t length = sizeof address;
    if (::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&address), &length) != 0)
      throw std::runtime_error(std::string("getsockname() failed: ") + std::strerror(errno));
    ports.push_back(ntohs(address.sin_port));
  }
  return ports;
}

int freeLoopbackPort() {
  return freeLoopbackPorts(1).front();
}

}  // namespace comcl::testing
