// The rtnetlink notification socket (see route_events.h); route_message.cpp reads what it receives.
#include "netlink/route_events.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace uplinkd::netlink {
namespace {

// Room for any one notification: a link message of a device with many VFs or a long alternative-name
// list stays below this. One that does not fit is reported as an overrun (MSG_TRUNC), never half-read.
constexpr size_t kReceiveSize = size_t{64} * 1024;

std::string errno_sentence(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
}

}  // namespace

RouteEvents::RouteEvents(int receive_buffer) : buffer_(kReceiveSize) {
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    error_ = errno_sentence("opening a NETLINK_ROUTE socket for route notifications", errno);
    return;
  }
  // Set before bind: from the first notification on, a burst finds the large buffer.
  if (receive_buffer > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
  } else {
    const int wanted = kDefaultReceiveBuffer;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &wanted, sizeof wanted) != 0) {
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &wanted, sizeof wanted);  // up to net.core.rmem_max
    }
  }
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  local.nl_groups =
      RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
  if (bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) {
    error_ =
        errno_sentence("subscribing to link, address and route notifications (NETLINK_ROUTE bind)", errno);
    close(fd);
    return;
  }
  socklen_t size = sizeof receive_buffer_;
  getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer_, &size);
  fd_ = fd;
}

RouteEvents::~RouteEvents() {
  if (fd_ >= 0) {
    close(fd_);
  }
}

RouteEventSummary RouteEvents::drain() {
  RouteEventSummary summary;
  if (fd_ < 0) {
    return summary;
  }
  for (int i = 0; i < kMaxReceivesPerDrain; ++i) {
    sockaddr_nl from{};
    socklen_t from_size = sizeof from;
    const ssize_t got = recvfrom(fd_, buffer_.data(), buffer_.size(), MSG_DONTWAIT | MSG_TRUNC,
                                 reinterpret_cast<sockaddr*>(&from), &from_size);
    if (got < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == ENOBUFS) {
        // Reported once per loss; what is still queued after it is read on as usual.
        summary.overrun = true;
        continue;
      }
      break;  // EAGAIN: all read. Anything else: nothing more to read now either.
    }
    if (from.nl_pid != 0) {
      continue;  // another process's message, not the kernel's
    }
    if (static_cast<size_t>(got) > buffer_.size()) {
      summary.overrun = true;  // cut short: what it said is lost
      continue;
    }
    add_route_messages(std::span<const uint8_t>(buffer_.data(), static_cast<size_t>(got)), &summary);
  }
  return summary;
}

}  // namespace uplinkd::netlink
