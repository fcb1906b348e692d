#include "observability/http_listener.h"

#include <microhttpd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "common/log.h"

namespace uplinkd::observability {

namespace {

// Headers every answer carries: nothing is cached, nothing is sniffed, and the page may use its
// own inline styles and nothing else (it has no script).
constexpr std::pair<const char*, const char*> kCommonHeaders[] = {
    {"Cache-Control", "no-store"},
    {"X-Content-Type-Options", "nosniff"},
    {"Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"},
};

std::string bind_hint(int err) {
  switch (err) {
    case EADDRINUSE:
      return "another program listens there: choose another port in metrics_listen, or stop that program";
    case EADDRNOTAVAIL:
      return "no interface has this address: use one of the router's addresses, 0.0.0.0 or [::]";
    case EACCES:
      return "ports below 1024 need CAP_NET_BIND_SERVICE, which uplinkd's systemd unit does not grant: "
             "use a port from 1024 up";
    default:
      return "check metrics_listen";
  }
}

// A listening socket of our own, so a failure names the address and the errno exactly.
int bind_socket(const ListenAddress& address) {
  const int fd = socket(address.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    throw std::runtime_error("metrics listener " + address.text + ": socket: " + std::strerror(errno));
  }
  const int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  // [::] means IPv6 only; 0.0.0.0 is configured apart, so the two never fight over the port.
  if (address.family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address.addr), address.len) != 0 || listen(fd, 16) != 0) {
    const int err = errno;
    close(fd);
    throw std::runtime_error("metrics listener " + address.text + ": bind: " + std::strerror(err) + " (" +
                             bind_hint(err) + ")");
  }
  return fd;
}

// libmicrohttpd answers HEAD with GET's headers and length, and no body.
MHD_Result queue(MHD_Connection* connection, const HttpResponse& answer) {
  MHD_Response* response = MHD_create_response_from_buffer(
      answer.body.size(), const_cast<char*>(answer.body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, "Content-Type", answer.content_type.c_str());
  for (const auto& [name, value] : kCommonHeaders) MHD_add_response_header(response, name, value);
  if (answer.status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(response, "Allow", "GET, HEAD");
  const MHD_Result result = MHD_queue_response(connection, static_cast<unsigned>(answer.status), response);
  MHD_destroy_response(response);
  return result;
}

void log_from_library(void* /*cls*/, const char* format, va_list args) {
  char line[512];
  std::vsnprintf(line, sizeof line, format, args);
  std::string text(line);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  log::info("metrics listener: " + text);
}

}  // namespace

struct HttpCallbacks {
  static MHD_Result query_argument(void* cls, MHD_ValueKind /*kind*/, const char* key, const char* value) {
    static_cast<HttpRequest*>(cls)->query[key] = value != nullptr ? value : "";
    return MHD_YES;
  }

  static MHD_Result answer(void* cls, MHD_Connection* connection, const char* url, const char* method,
                           const char* /*version*/, const char* /*upload_data*/, size_t* upload_data_size,
                           void** /*req_cls*/) {
    auto* self = static_cast<HttpListener*>(cls);
    const bool get = std::strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    const bool head = std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!get && !head) {
      *upload_data_size = 0;  // a body is not read: the answer closes the connection
      return queue(connection,
                   {MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "only GET and HEAD\n"});
    }
    HttpRequest request{url, {}};
    MHD_get_connection_values(connection, MHD_GET_ARGUMENT_KIND, &HttpCallbacks::query_argument, &request);
    HttpResponse answer;
    try {
      answer = self->handler_(request);
    } catch (const std::exception& e) {
      answer = {MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", std::string(e.what()) + "\n"};
    }
    return queue(connection, answer);
  }
};

HttpListener::HttpListener(const ListenAddress& address, HttpHandler handler, HttpLimits limits)
    : address_(address.text), handler_(std::move(handler)), socket_(bind_socket(address)) {
  daemon_ = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | (address.family == AF_INET6 ? MHD_USE_IPv6 : 0),
      0, nullptr, nullptr, &HttpCallbacks::answer, this, MHD_OPTION_LISTEN_SOCKET, socket_,
      MHD_OPTION_CONNECTION_TIMEOUT, limits.idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT, limits.connections,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, limits.connections_per_ip, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      limits.request_memory, MHD_OPTION_EXTERNAL_LOGGER, &log_from_library, nullptr, MHD_OPTION_END);
  if (daemon_ == nullptr) {
    close(socket_);
    throw std::runtime_error("metrics listener " + address_ + ": libmicrohttpd could not start its thread");
  }
}

HttpListener::~HttpListener() {
  MHD_stop_daemon(daemon_);  // joins the thread; the socket was ours
  close(socket_);
}

}  // namespace uplinkd::observability
