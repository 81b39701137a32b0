// A small synchronous HTTP/1.1 client for integration tests: talks to a server on 127.0.0.1 only, one
// connection per request, every socket operation bounded by a timeout.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace comcl::testing {

struct HttpResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names; repeated headers joined with ", "

  // The body parsed as JSON; throws std::runtime_error quoting the status and the body when it is not JSON.
  nlohmann::json json() const;
};

class HttpClient {
 public:
  explicit HttpClient(int port, std::optional<std::pair<std::string, std::string>> basicAuth = std::nullopt,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // Connection failures and timeouts throw std::runtime_error; HTTP error statuses are returned, not thrown.
  HttpResponse get(const std::string& path) const;
  HttpResponse post(const std::string& path, const std::string& body,
                    const std::string& contentType = "application/json") const;
  HttpResponse put(const std::string& path, const std::string& body,
                   const std::string& contentType = "application/json") const;
  HttpResponse del(const std::string& path) const;

  int port() const { return port_; }

 private:
  HttpResponse request(const std::string& method, const std::string& path, const std::string* body,
                       const std::string& contentType) const;

  int port_;
  std::string authorization_;  // full "Basic ..." header value, empty without authentication
  std::chrono::milliseconds timeout_;
};

// A TCP port that was free on 127.0.0.1 a moment ago: binds 127.0.0.1:0, reads the port the kernel chose and
// closes the socket. Another process may take the port before the caller binds it (a small race), and a port
// held only on another local address is not seen (Orthanc 1.10.1 binds 0.0.0.0), so callers must retry with a
// new port when their server fails to bind; OrthancProcess does.
int freeLoopbackPort();

// `count` distinct free ports (all held open together while they are chosen, so they cannot repeat).
std::vector<int> freeLoopbackPorts(std::size_t count);

}  // namespace comcl::testing
