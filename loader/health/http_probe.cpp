#include "health/http_probe.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "health/http_response.h"

#ifdef UPLINKD_HAVE_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

namespace uplinkd::health {

#ifdef UPLINKD_HAVE_TLS
class TlsContext {
 public:
  TlsContext() : ctx_(SSL_CTX_new(TLS_client_method())) {
    if (ctx_ == nullptr) throw std::runtime_error("httping_ssl: cannot create an OpenSSL context");
    // An IP target has no name to check a certificate against (see the header).
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
  }
  ~TlsContext() { SSL_CTX_free(ctx_); }
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  [[nodiscard]] SSL_CTX* get() const { return ctx_; }

 private:
  SSL_CTX* ctx_;
};
#else
class TlsContext {};  // never made: the configuration refuses httping_ssl in such a build
#endif

namespace {

constexpr uint16_t kHttpPort = 80;
constexpr uint16_t kHttpsPort = 443;
constexpr size_t kReadChunk = 4096;

int set_int(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value) == 0 ? 0 : -errno;
}

// A non-blocking TCP socket on the uplink: its device, its mark, the configured TTL.
int open_probe_socket(int family, const std::string& device, uint32_t mark, int ttl) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return -errno;
  int err = setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device.c_str(),
                       static_cast<socklen_t>(device.size() + 1)) == 0
                ? 0
                : -errno;
  if (err == 0) err = set_int(fd, SOL_SOCKET, SO_MARK, static_cast<int>(mark));
  if (err == 0 && ttl > 0) {
    err = family == AF_INET ? set_int(fd, IPPROTO_IP, IP_TTL, ttl)
                            : set_int(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl);
  }
  if (err == 0) err = set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  if (err != 0) {
    close(fd);
    return err;
  }
  return fd;
}

std::string host_header(const IpAddress& target) {
  return target.is_v6() ? "[" + target.str() + "]" : target.str();
}

}  // namespace

// One HEAD / exchange: connect, [TLS handshake], send the request, read the response's head.
class HttpExchange {
 public:
  enum class Step { Connecting, Handshaking, Sending, Reading };
  enum class Outcome { Pending, Answered, Failed };

  HttpExchange(int fd, int64_t started_ns, std::string request, TlsContext* tls)
      : fd_(fd), started_ns_(started_ns), request_(std::move(request)) {
#ifdef UPLINKD_HAVE_TLS
    if (tls != nullptr) {
      ssl_ = SSL_new(tls->get());
      if (ssl_ != nullptr) {
        SSL_set_fd(ssl_, fd_);
        SSL_set_connect_state(ssl_);
      }
    }
#else
    (void)tls;
#endif
  }
  ~HttpExchange() {
#ifdef UPLINKD_HAVE_TLS
    if (ssl_ != nullptr) SSL_free(ssl_);
#endif
    if (fd_ >= 0) close(fd_);
  }
  HttpExchange(const HttpExchange&) = delete;
  HttpExchange& operator=(const HttpExchange&) = delete;

  [[nodiscard]] int fd() const { return fd_; }
  // What the exchange waits for; the epoll set is updated after every advance().
  [[nodiscard]] uint32_t wanted_events() const { return want_write_ ? EPOLLOUT : EPOLLIN; }
  [[nodiscard]] const std::string& reason() const { return reason_; }
  [[nodiscard]] double rtt_ms() const { return static_cast<double>(answered_ns_ - started_ns_) / 1e6; }

  Outcome advance(int64_t now_ns) {
    Outcome outcome = Outcome::Pending;
    // Each step either finishes (and the next one is tried at once) or waits for the socket.
    for (int guard = 0; guard < 8 && outcome == Outcome::Pending; ++guard) {
      const Step before = step_;
      outcome = run_step(now_ns);
      if (outcome == Outcome::Pending && step_ == before) break;
    }
    return outcome;
  }

 private:
  Outcome fail(std::string why) {
    reason_ = std::move(why);
    return Outcome::Failed;
  }

  Outcome run_step(int64_t now_ns) {
    switch (step_) {
      case Step::Connecting:
        return connecting();
      case Step::Handshaking:
        return handshaking();
      case Step::Sending:
        return sending();
      case Step::Reading:
        return reading(now_ns);
    }
    return Outcome::Pending;
  }

  Outcome connecting() {
    int error = 0;
    socklen_t size = sizeof error;
    if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &size) != 0) error = errno;
    if (error == EINPROGRESS || error == EALREADY) return Outcome::Pending;
    if (error != 0) return fail(std::string("connect: ") + std::strerror(error));
    // SO_ERROR is 0 both when connected and while still connecting: ask the peer's address.
    sockaddr_storage peer{};
    socklen_t peer_size = sizeof peer;
    if (getpeername(fd_, reinterpret_cast<sockaddr*>(&peer), &peer_size) != 0) {
      if (errno == ENOTCONN) return Outcome::Pending;
      return fail(std::string("connect: ") + std::strerror(errno));
    }
    step_ = ssl_ != nullptr ? Step::Handshaking : Step::Sending;
    want_write_ = true;
    return Outcome::Pending;
  }

  Outcome handshaking() {
#ifdef UPLINKD_HAVE_TLS
    ERR_clear_error();
    const int rc = SSL_do_handshake(ssl_);
    if (rc == 1) {
      step_ = Step::Sending;
      want_write_ = true;
      return Outcome::Pending;
    }
    const int error = SSL_get_error(ssl_, rc);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      want_write_ = error == SSL_ERROR_WANT_WRITE;
      return Outcome::Pending;
    }
    return fail("TLS handshake failed: " + tls_error(error));
#else
    return fail("TLS is not built in");
#endif
  }

  Outcome sending() {
    while (sent_ < request_.size()) {
      const char* data = request_.data() + sent_;
      const size_t left = request_.size() - sent_;
      ssize_t n = 0;
#ifdef UPLINKD_HAVE_TLS
      if (ssl_ != nullptr) {
        ERR_clear_error();
        const int rc = SSL_write(ssl_, data, static_cast<int>(left));
        if (rc <= 0) {
          const int error = SSL_get_error(ssl_, rc);
          if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
            want_write_ = error == SSL_ERROR_WANT_WRITE;
            return Outcome::Pending;
          }
          return fail("TLS write failed: " + tls_error(error));
        }
        n = rc;
      }
#endif
      if (ssl_ == nullptr) {
        n = send(fd_, data, left, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) return Outcome::Pending;
          return fail(std::string("send: ") + std::strerror(errno));
        }
      }
      sent_ += static_cast<size_t>(n);
    }
    step_ = Step::Reading;
    want_write_ = false;
    return Outcome::Pending;
  }

  Outcome reading(int64_t now_ns) {
    char buffer[kReadChunk];
    for (;;) {
      ssize_t n = 0;
#ifdef UPLINKD_HAVE_TLS
      if (ssl_ != nullptr) {
        ERR_clear_error();
        const int rc = SSL_read(ssl_, buffer, sizeof buffer);
        if (rc <= 0) {
          const int error = SSL_get_error(ssl_, rc);
          if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
            want_write_ = error == SSL_ERROR_WANT_WRITE;
            return Outcome::Pending;
          }
          if (error == SSL_ERROR_ZERO_RETURN) return fail("connection closed before the response's headers");
          return fail("TLS read failed: " + tls_error(error));
        }
        n = rc;
      }
#endif
      if (ssl_ == nullptr) {
        n = recv(fd_, buffer, sizeof buffer, 0);
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) return Outcome::Pending;
          return fail(std::string("recv: ") + std::strerror(errno));
        }
        if (n == 0) return fail("connection closed before the response's headers");
      }
      received_.append(buffer, static_cast<size_t>(n));
      const HttpHead head = parse_http_head(received_);
      if (head.state == HttpHeadState::Malformed) return fail("malformed HTTP response");
      if (head.state == HttpHeadState::Complete) {
        answered_ns_ = now_ns;
        if (!http_status_counts_as_reply(head.status))
          return fail("HTTP status " + std::to_string(head.status));
        reason_ = "HTTP status " + std::to_string(head.status);
        return Outcome::Answered;
      }
    }
  }

#ifdef UPLINKD_HAVE_TLS
  static std::string tls_error(int ssl_error) {
    const unsigned long code = ERR_peek_last_error();
    if (code != 0) {
      char text[256];
      ERR_error_string_n(code, text, sizeof text);
      return text;
    }
    if (ssl_error == SSL_ERROR_SYSCALL) return errno != 0 ? std::strerror(errno) : "connection closed";
    return "SSL error " + std::to_string(ssl_error);
  }
  SSL* ssl_ = nullptr;
#else
  void* ssl_ = nullptr;
#endif
  int fd_;
  int64_t started_ns_;
  int64_t answered_ns_ = 0;
  std::string request_;
  size_t sent_ = 0;
  std::string received_;
  std::string reason_;
  Step step_ = Step::Connecting;
  bool want_write_ = true;  // a connect completes when the socket becomes writable
};

HttpProber::HttpProber(std::string device, uint32_t fwmark, int ttl, bool tls)
    : device_(std::move(device)), fwmark_(fwmark), ttl_(ttl) {
#ifdef UPLINKD_HAVE_TLS
  if (tls) tls_ = std::make_unique<TlsContext>();
#else
  if (tls) throw std::runtime_error("httping_ssl: this uplinkd was built without TLS");
#endif
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::runtime_error(std::string("httping: epoll_create1: ") + std::strerror(errno));
}

HttpProber::~HttpProber() {
  exchanges_.clear();
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

void HttpProber::watch(const HttpExchange& exchange, bool add) {
  epoll_event ev{};
  ev.events = exchange.wanted_events();
  ev.data.fd = exchange.fd();
  epoll_ctl(epoll_fd_, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, exchange.fd(), &ev);
}

int64_t HttpProber::start(const IpAddress& target, int64_t now_ns) {
  if (!target.is_v4() && !target.is_v6()) return -EAFNOSUPPORT;
  const int fd = open_probe_socket(target.family, device_, fwmark_, ttl_);
  if (fd < 0) return fd;
  sockaddr_storage to{};
  socklen_t to_size = 0;
  const uint16_t port = tls_ ? kHttpsPort : kHttpPort;
  if (target.is_v4()) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&to);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    std::memcpy(&sin->sin_addr, target.bytes.data(), 4);
    to_size = sizeof *sin;
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&to);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    std::memcpy(&sin6->sin6_addr, target.bytes.data(), 16);
    to_size = sizeof *sin6;
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), to_size) != 0 && errno != EINPROGRESS) {
    const int err = -errno;
    close(fd);
    return err;
  }
  // httping's request: HEAD / over HTTP/1.0, with a Host line.
  std::string request = "HEAD / HTTP/1.0\r\nHost: " + host_header(target) +
                        "\r\nUser-Agent: uplinkd-httping\r\nConnection: close\r\n\r\n";
  auto exchange = std::make_unique<HttpExchange>(fd, now_ns, std::move(request), tls_.get());
  watch(*exchange, true);
  const uint64_t id = next_id_++;
  exchanges_.emplace(id, std::move(exchange));
  return static_cast<int64_t>(id);
}

std::vector<HttpResult> HttpProber::poll(int64_t now_ns) {
  // Drain the readiness list; every exchange is moved on anyway (there are a handful at most).
  epoll_event events[16];
  while (epoll_wait(epoll_fd_, events, 16, 0) == 16) {
  }
  std::vector<HttpResult> done;
  for (auto it = exchanges_.begin(); it != exchanges_.end();) {
    HttpExchange& exchange = *it->second;
    const HttpExchange::Outcome outcome = exchange.advance(now_ns);
    if (outcome == HttpExchange::Outcome::Pending) {
      watch(exchange, false);
      ++it;
      continue;
    }
    HttpResult result;
    result.id = it->first;
    result.reason = exchange.reason();
    if (outcome == HttpExchange::Outcome::Answered) result.rtt_ms = exchange.rtt_ms();
    done.push_back(std::move(result));
    it = exchanges_.erase(it);  // closing the socket takes it out of the epoll set
  }
  return done;
}

void HttpProber::cancel(uint64_t id) { exchanges_.erase(id); }

void HttpProber::cancel_all() { exchanges_.clear(); }

}  // namespace uplinkd::health
