// What every libnl-route user here shares: owning pointers for libnl objects, a connected route
// socket, and requests that report the kernel's own errno.
//
// libnl reports kernel errors as its own NLE_* codes, and several errnos share one code (ENOENT
// and ESRCH both become NLE_OBJ_NOTFOUND). send_request() therefore captures the kernel's errno
// from the NLMSG_ERROR answer itself, so callers and error sentences get the real one.
#pragma once

#include <linux/rtnetlink.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

namespace uplinkd::netlink {

struct NlSocketCloser {
  void operator()(nl_sock* sock) const { nl_socket_free(sock); }
};
struct NlAddrPutter {
  void operator()(nl_addr* addr) const { nl_addr_put(addr); }
};
struct RoutePutter {
  void operator()(rtnl_route* route) const { rtnl_route_put(route); }
};
struct RulePutter {
  void operator()(rtnl_rule* rule) const { rtnl_rule_put(rule); }
};
struct MessageFreer {
  void operator()(nl_msg* message) const { nlmsg_free(message); }
};
using SocketPtr = std::unique_ptr<nl_sock, NlSocketCloser>;
using AddrPtr = std::unique_ptr<nl_addr, NlAddrPutter>;
using RoutePtr = std::unique_ptr<rtnl_route, RoutePutter>;
using RulePtr = std::unique_ptr<rtnl_rule, RulePutter>;
using MessagePtr = std::unique_ptr<nl_msg, MessageFreer>;

inline SocketPtr connect_route_socket() {
  SocketPtr sock(nl_socket_alloc());
  if (sock && nl_connect(sock.get(), NETLINK_ROUTE) < 0) sock.reset();
  return sock;
}

// For failures that happen before the kernel answers (no memory, socket trouble).
inline int nle_to_errno(int nle) {
  switch (nle) {
    case NLE_NOMEM:
      return ENOMEM;
    case NLE_INVAL:
    case NLE_RANGE:
      return EINVAL;
    case NLE_BAD_SOCK:
      return EBADF;
    case NLE_AF_NOSUPPORT:
      return EAFNOSUPPORT;
    case NLE_PERM:
      return EPERM;
    case NLE_NODEV:
      return ENODEV;
    default:
      return EIO;
  }
}

inline int remember_kernel_errno(sockaddr_nl* /*from*/, nlmsgerr* answer, void* kernel_errno) {
  *static_cast<int*>(kernel_errno) = -answer->error;
  return NL_STOP;
}

// Sends one request and waits for the kernel's acknowledgment: 0 or -errno.
inline int send_request(nl_sock* sock, nl_msg* message) {
  int kernel_errno = 0;
  nl_socket_modify_err_cb(sock, NL_CB_CUSTOM, remember_kernel_errno, &kernel_errno);
  int err = nl_send_auto(sock, message);
  if (err >= 0) err = nl_wait_for_ack(sock);
  nl_socket_modify_err_cb(sock, NL_CB_DEFAULT, nullptr, nullptr);  // `kernel_errno` dies here
  if (err >= 0) return 0;
  return kernel_errno != 0 ? -kernel_errno : -nle_to_errno(-err);
}

// Sends a request that an rtnl_*_build_*_request() call returned (with its result): 0 or -errno.
inline int send_built(nl_sock* sock, int build_result, nl_msg* built) {
  if (build_result < 0) return -nle_to_errno(-build_result);
  MessagePtr message(built);
  return send_request(sock, message.get());
}

// NLM_F_EXCL makes the kernel refuse a rule identical to an existing one (EEXIST) instead of
// adding a duplicate, which `ip rule` would show twice and removal would have to delete twice.
inline int add_rule(nl_sock* sock, rtnl_rule* rule) {
  nl_msg* raw = nullptr;
  const int built = rtnl_rule_build_add_request(rule, NLM_F_EXCL, &raw);
  return send_built(sock, built, raw);
}

inline int delete_rule(nl_sock* sock, rtnl_rule* rule) {
  nl_msg* raw = nullptr;
  const int built = rtnl_rule_build_delete_request(rule, 0, &raw);
  return send_built(sock, built, raw);
}

inline size_t address_size(int family) { return family == AF_INET ? 4 : 16; }

inline std::string errno_text(int negative_errno) {
  return std::string(std::strerror(-negative_errno)) + " (errno " + std::to_string(-negative_errno) + ")";
}

// A dump request for the routes of one table of one family, with strict checking switched on for
// `sock`, so that the kernel sends only that table (RTA_TABLE) and a router holding a full BGP table
// elsewhere is not walked for it. Null when out of memory.
inline MessagePtr table_route_dump_request(nl_sock* sock, int family, uint32_t table) {
  int strict = 1;
  setsockopt(nl_socket_get_fd(sock), SOL_NETLINK, NETLINK_GET_STRICT_CHK, &strict, sizeof strict);
  MessagePtr message(nlmsg_alloc_simple(RTM_GETROUTE, NLM_F_DUMP));
  if (!message) return nullptr;
  rtmsg request{};
  request.rtm_family = static_cast<unsigned char>(family);
  request.rtm_table = static_cast<unsigned char>(table < 256 ? table : RT_TABLE_UNSPEC);
  if (nlmsg_append(message.get(), &request, sizeof request, NLMSG_ALIGNTO) < 0 ||
      nla_put_u32(message.get(), RTA_TABLE, table) < 0) {
    return nullptr;
  }
  return message;
}

}  // namespace uplinkd::netlink
