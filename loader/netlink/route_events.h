// The kernel's link, address and route notifications (rtnetlink multicast groups), read without
// blocking from one socket the daemon's event loop polls.
//
// The kernel drops notifications when this socket's receive buffer is full and says so once, as
// ENOBUFS on the next receive (libnl calls it NLE_NOMEM). drain() reports that as `overrun`: events
// were lost and the caller must read the state it keeps again by dump (routes, addresses, devices).
// NETLINK_NO_ENOBUFS is deliberately not set: it would hide the loss. The buffer is large by default
// (4 MiB) so that a burst of route changes (a BGP session coming up, a VPN pushing routes) rarely
// overruns it; a burst that does costs one resync, not a wrong table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "netlink/route_message.h"

namespace uplinkd::netlink {

class RouteEvents {
 public:
  static constexpr int kDefaultReceiveBuffer = 4 << 20;
  // Messages read per drain(): a flood is caught up over several wake-ups of a level-triggered poll
  // rather than in one that starves the rest of the loop.
  static constexpr int kMaxReceivesPerDrain = 1024;

  // Opens the socket, subscribed to links, IPv4/IPv6 addresses and IPv4/IPv6 routes.
  // `receive_buffer` > 0: SO_RCVBUF of that many bytes (the kernel doubles it and has a floor), for
  // tests that want an overrun. 0: kDefaultReceiveBuffer through SO_RCVBUFFORCE (CAP_NET_ADMIN),
  // else through SO_RCVBUF (capped by net.core.rmem_max). Never throws: see ok() and error().
  explicit RouteEvents(int receive_buffer = 0);
  ~RouteEvents();
  RouteEvents(const RouteEvents&) = delete;
  RouteEvents& operator=(const RouteEvents&) = delete;

  [[nodiscard]] bool ok() const { return fd_ >= 0; }
  // Why the socket could not be opened ("" when ok()); a sentence with the errno.
  [[nodiscard]] const std::string& error() const { return error_; }
  // For epoll (EPOLLIN, level-triggered); -1 when !ok().
  [[nodiscard]] int fd() const { return fd_; }
  // The receive buffer the kernel granted, in bytes (SO_RCVBUF as read back).
  [[nodiscard]] int receive_buffer() const { return receive_buffer_; }

  // Reads what is queued now, without blocking, up to kMaxReceivesPerDrain messages: what changed,
  // and `overrun` when the kernel dropped notifications since the last drain (or a message was cut
  // short). Messages not from the kernel are ignored. An empty summary when !ok().
  RouteEventSummary drain();

 private:
  int fd_ = -1;
  int receive_buffer_ = 0;
  std::string error_;
  std::vector<uint8_t> buffer_;  // one received datagram; on the heap, too big for the loop's stack
};

}  // namespace uplinkd::netlink
