// httping: HTTP (or, with httping_ssl, HTTPS) HEAD / to a track_ip, in-process and non-blocking.
//
// mwan3 runs `httping -c count -t timeout http://<ip>` (https:// with httping_ssl). Here each probe is
// one exchange on its own TCP socket, bound to the uplink's device and carrying its mark like every
// other probe socket: connect, TLS handshake when asked for, the request, then reading until the
// response's header block is complete. Nothing blocks: the sockets are non-blocking and sit in an
// epoll set of their own whose descriptor the daemon's loop watches; HttpProber::poll() moves each
// exchange on as far as it can, and the monitor gives up on one at its deadline.
//
// Unlike the other methods, the reply is not matched by the XDP program: proving an HTTP exchange
// needs the TCP byte stream, which only exists after the kernel's TCP stack (and so netfilter) has
// taken the segments, reassembled and acknowledged them, and for HTTPS only after decryption. A
// SYN-ACK seen at XDP proves a TCP listener, not a web server. So a reply the firewall drops is
// never seen here and the probe times out: for httping that is the honest outcome, the target's
// answer did not reach the router's stack.
//
// HTTPS: OpenSSL, with no certificate validation and no SNI. The target is an IP address, for which
// a public certificate rarely exists, and httping as mwan3 runs it does not validate either; the
// probe proves that a TLS server answers through this uplink, not who it is.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"

namespace uplinkd::health {

class HttpExchange;
class TlsContext;

struct HttpResult {
  uint64_t id = 0;
  std::optional<double> rtt_ms;  // set: the target answered; nullopt: the probe failed
  std::string reason;            // why it failed (log text), or the status line's code
};

class HttpProber {
 public:
  HttpProber(std::string device, uint32_t fwmark, int ttl, bool tls);
  ~HttpProber();
  HttpProber(const HttpProber&) = delete;
  HttpProber& operator=(const HttpProber&) = delete;

  // The epoll descriptor the daemon's loop watches: readable when an exchange can move on.
  [[nodiscard]] int event_fd() const { return epoll_fd_; }

  // Starts an exchange with target (port 80, or 443 with TLS). Returns its id, or a negative errno
  // when it cannot start (no socket, no route): the probe has failed.
  int64_t start(const IpAddress& target, int64_t now_ns);
  // Moves every exchange on; returns the ones that finished (answered or failed).
  std::vector<HttpResult> poll(int64_t now_ns);
  // Gives up on an exchange (its deadline passed, or the monitor stops).
  void cancel(uint64_t id);
  void cancel_all();
  [[nodiscard]] size_t in_flight() const { return exchanges_.size(); }

 private:
  void watch(const HttpExchange& exchange, bool add);

  std::string device_;
  uint32_t fwmark_;
  int ttl_;
  std::unique_ptr<TlsContext> tls_;  // null: plain HTTP
  int epoll_fd_ = -1;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::unique_ptr<HttpExchange>> exchanges_;
};

}  // namespace uplinkd::health
