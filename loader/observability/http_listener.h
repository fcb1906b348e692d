// The metrics listener's HTTP side, on GNU libmicrohttpd (Debian's libmicrohttpd-dev, OpenWrt's
// libmicrohttpd): one listener per configured address, each served by one thread of its own.
// It answers GET and HEAD only, and bounds every request: header memory (a bigger request gets 431
// and is closed), idle time (a client that sends nothing is closed), connections in all and per
// client address. The handler runs on the listener's thread, never on the daemon's loop.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "observability/listen_address.h"

struct MHD_Daemon;

namespace uplinkd::observability {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct HttpRequest {
  std::string path;                          // without the query string
  std::map<std::string, std::string> query;  // its arguments, decoded
};

// Called for GET and HEAD; the listener answers the rest itself.
using HttpHandler = std::function<HttpResponse(const HttpRequest& request)>;

struct HttpLimits {
  unsigned idle_timeout_s = 5;                // a connection that sends nothing for this long is closed
  unsigned connections = 16;                  // at once, in all
  unsigned connections_per_ip = 8;            // at once, from one client address
  size_t request_memory = size_t{16} * 1024;  // request line and headers of one request
};

class HttpListener {
 public:
  // Binds `address` and starts serving; throws std::runtime_error naming the address, the errno
  // and what to do about it.
  HttpListener(const ListenAddress& address, HttpHandler handler, HttpLimits limits = {});
  ~HttpListener();  // stops the thread; a handler still running finishes first
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  [[nodiscard]] const std::string& address() const { return address_; }

 private:
  std::string address_;
  HttpHandler handler_;
  MHD_Daemon* daemon_ = nullptr;
  int socket_ = -1;

  friend struct HttpCallbacks;
};

}  // namespace uplinkd::observability
