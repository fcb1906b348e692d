#include "wireguard/endpoint_routes.h"

#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "lifecycle/teardown.h"
#include "netlink/nl_util.h"

namespace uplinkd::wireguard {
namespace {

using netlink::address_size;
using netlink::AddrPtr;
using netlink::errno_text;
using netlink::MessagePtr;
using netlink::RoutePtr;
using netlink::send_built;
using netlink::SocketPtr;

uint8_t full_prefix(int family) { return family == AF_INET ? 32 : 128; }

AddrPtr to_nl_addr(const IpAddress& address) {
  return AddrPtr(nl_addr_build(address.family, address.bytes.data(), address_size(address.family)));
}

std::optional<IpAddress> from_nl_addr(nl_addr* addr) {
  if (addr == nullptr) return std::nullopt;
  int family = nl_addr_get_family(addr);
  if ((family != AF_INET && family != AF_INET6) || nl_addr_get_len(addr) != address_size(family)) {
    return std::nullopt;
  }
  IpAddress result;
  result.family = family;
  std::memcpy(result.bytes.data(), nl_addr_get_binary_addr(addr), address_size(family));
  return result;
}

std::string device_name(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (ifindex > 0 && if_indextoname(static_cast<unsigned>(ifindex), name) != nullptr) return name;
  return "ifindex " + std::to_string(ifindex);
}

std::string table_name(uint32_t table) { return table == RT_TABLE_MAIN ? "main" : std::to_string(table); }

std::string nexthop_text(int ifindex, const std::optional<IpAddress>& gateway) {
  return (gateway ? "via " + gateway->str() + " " : std::string()) + "dev " + device_name(ifindex);
}

std::string protocol_name(uint8_t protocol) {
  switch (protocol) {
    case RTPROT_KERNEL:
      return "kernel";
    case RTPROT_BOOT:
      return "boot";
    case RTPROT_STATIC:
      return "static";
    default:
      return std::to_string(protocol);
  }
}

// As `ip route` would print it, so a person can find it with `ip route show table all`.
std::string describe(const HostRoute& route) {
  std::string text = route.destination.str() + " " + nexthop_text(route.ifindex, route.gateway) + " table " +
                     table_name(route.table) + " proto " + protocol_name(route.protocol);
  if (route.priority != 0) text += " metric " + std::to_string(route.priority);
  return text;
}

RoutePtr build_route(const HostRoute& host) {
  RoutePtr route(rtnl_route_alloc());
  AddrPtr destination = to_nl_addr(host.destination);
  rtnl_nexthop* nexthop = rtnl_route_nh_alloc();
  if (!route || !destination || nexthop == nullptr) {
    if (nexthop != nullptr) rtnl_route_nh_free(nexthop);
    return nullptr;
  }
  nl_addr_set_prefixlen(destination.get(), full_prefix(host.destination.family));
  rtnl_route_set_family(route.get(), static_cast<uint8_t>(host.destination.family));
  rtnl_route_set_table(route.get(), host.table);
  rtnl_route_set_protocol(route.get(), host.protocol);
  rtnl_route_set_type(route.get(), RTN_UNICAST);
  rtnl_route_set_scope(route.get(), host.scope);
  rtnl_route_set_priority(route.get(), host.priority);
  rtnl_route_set_tos(route.get(), host.tos);
  rtnl_route_set_dst(route.get(), destination.get());
  rtnl_route_nh_set_ifindex(nexthop, host.ifindex);
  if (host.gateway) {
    AddrPtr via = to_nl_addr(*host.gateway);
    if (!via) {
      rtnl_route_nh_free(nexthop);
      return nullptr;
    }
    rtnl_route_nh_set_gateway(nexthop, via.get());
  }
  rtnl_route_add_nexthop(route.get(), nexthop);
  return route;
}

// NLM_F_REPLACE swaps the route with the same (table, destination, tos, metric) in one step, so
// the endpoint is never without a route; NLM_F_EXCL adds only where no such route exists.
int write_route(nl_sock* sock, const HostRoute& host, int flags) {
  if (sock == nullptr) return -ENOTCONN;
  RoutePtr route = build_route(host);
  if (!route) return -ENOMEM;
  nl_msg* raw = nullptr;
  const int built = rtnl_route_build_add_request(route.get(), flags, &raw);
  return send_built(sock, built, raw);
}

int delete_route(nl_sock* sock, const HostRoute& host) {
  if (sock == nullptr) return -ENOTCONN;
  RoutePtr route = build_route(host);
  if (!route) return -ENOMEM;
  nl_msg* raw = nullptr;
  const int built = rtnl_route_build_del_request(route.get(), 0, &raw);
  return send_built(sock, built, raw);
}

struct DumpContext {
  int family = 0;
  std::vector<HostRoute> routes;
};

int collect_host_route(nl_msg* message, void* context) {
  auto* dump = static_cast<DumpContext*>(context);
  rtnl_route* parsed = nullptr;
  if (rtnl_route_parse(nlmsg_hdr(message), &parsed) < 0) return NL_OK;
  RoutePtr route(parsed);
  nl_addr* destination = rtnl_route_get_dst(route.get());
  if (rtnl_route_get_family(route.get()) != dump->family || rtnl_route_get_type(route.get()) != RTN_UNICAST ||
      destination == nullptr || nl_addr_get_prefixlen(destination) != full_prefix(dump->family) ||
      rtnl_route_get_table(route.get()) == RT_TABLE_LOCAL) {
    return NL_OK;
  }
  std::optional<IpAddress> address = from_nl_addr(destination);
  if (!address) return NL_OK;
  HostRoute host;
  host.destination = *address;
  host.table = rtnl_route_get_table(route.get());
  host.priority = rtnl_route_get_priority(route.get());
  host.tos = rtnl_route_get_tos(route.get());
  host.protocol = rtnl_route_get_protocol(route.get());
  host.scope = rtnl_route_get_scope(route.get());
  host.nexthops = rtnl_route_get_nnexthops(route.get());
  if (host.nexthops > 0) {
    rtnl_nexthop* nexthop = rtnl_route_nexthop_n(route.get(), 0);
    host.ifindex = rtnl_route_nh_get_ifindex(nexthop);
    host.gateway = from_nl_addr(rtnl_route_nh_get_gateway(nexthop));
  }
  dump->routes.push_back(host);
  return NL_OK;
}

struct LookupContext {
  int ifindex = 0;
};

int remember_output_device(nl_msg* message, void* context) {
  rtnl_route* parsed = nullptr;
  if (rtnl_route_parse(nlmsg_hdr(message), &parsed) < 0) return NL_OK;
  RoutePtr route(parsed);
  if (rtnl_route_get_nnexthops(route.get()) > 0) {
    static_cast<LookupContext*>(context)->ifindex =
        rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(route.get(), 0));
  }
  return NL_STOP;
}

// The command that shows the same lookup.
std::string lookup_text(const IpAddress& endpoint, uint32_t fwmark) {
  std::string text = "ip route get " + endpoint.str();
  if (fwmark != 0) {
    char mark[16];
    std::snprintf(mark, sizeof mark, "0x%x", fwmark);
    text += std::string(" mark ") + mark;
  }
  return text;
}

bool same_key(const HostRoute& a, const HostRoute& b) {
  return a.destination == b.destination && a.table == b.table && a.priority == b.priority && a.tos == b.tos;
}

}  // namespace

std::vector<HostRoute> dump_host_routes(int family, std::string* error) {
  DumpContext dump{family, {}};
  // A route change during the dump makes it inconsistent (NLE_DUMP_INTR): read it again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    dump.routes.clear();
    SocketPtr sock = netlink::connect_route_socket();
    if (!sock) {
      *error = "cannot open an rtnetlink socket";
      return {};
    }
    rtmsg request{};
    request.rtm_family = static_cast<unsigned char>(family);
    int err = nl_send_simple(sock.get(), RTM_GETROUTE, NLM_F_DUMP, &request, sizeof request);
    if (err >= 0) {
      nl_socket_modify_cb(sock.get(), NL_CB_VALID, NL_CB_CUSTOM, collect_host_route, &dump);
      err = nl_recvmsgs_default(sock.get());
    }
    if (err >= 0) return std::move(dump.routes);
    if (err != -NLE_DUMP_INTR) {
      *error = std::string("dumping routes: ") + nl_geterror(err);
      return {};
    }
  }
  *error = "dumping routes: interrupted three times by route changes";
  return {};
}

int route_lookup_ifindex(const IpAddress& destination, uint32_t fwmark) {
  SocketPtr sock = netlink::connect_route_socket();
  if (!sock) return -ENOTCONN;
  nl_socket_disable_auto_ack(sock.get());  // RTM_GETROUTE answers with the route, not an ack
  MessagePtr message(nlmsg_alloc_simple(RTM_GETROUTE, NLM_F_REQUEST));
  rtmsg header{};
  header.rtm_family = static_cast<unsigned char>(destination.family);
  header.rtm_dst_len = full_prefix(destination.family);
  if (!message || nlmsg_append(message.get(), &header, sizeof header, NLMSG_ALIGNTO) < 0 ||
      nla_put(message.get(), RTA_DST, static_cast<int>(address_size(destination.family)),
              destination.bytes.data()) < 0 ||
      (fwmark != 0 && nla_put_u32(message.get(), RTA_MARK, fwmark) < 0)) {
    return -ENOMEM;
  }
  LookupContext found;
  int kernel_errno = 0;
  nl_socket_modify_cb(sock.get(), NL_CB_VALID, NL_CB_CUSTOM, remember_output_device, &found);
  nl_socket_modify_err_cb(sock.get(), NL_CB_CUSTOM, netlink::remember_kernel_errno, &kernel_errno);
  int err = nl_send_auto(sock.get(), message.get());
  if (err >= 0) err = nl_recvmsgs_default(sock.get());
  if (kernel_errno == ENETUNREACH || kernel_errno == EHOSTUNREACH) return 0;
  if (kernel_errno != 0) return -kernel_errno;
  if (err < 0) return -netlink::nle_to_errno(-err);
  return found.ifindex;
}

EndpointRoutes::EndpointRoutes() : sock_(netlink::connect_route_socket().release()) {}

EndpointRoutes::~EndpointRoutes() {
  if (!lifecycle::keep_kernel_state()) restore_all();
  if (sock_ != nullptr) nl_socket_free(sock_);
}

std::vector<EndpointRouteReport> EndpointRoutes::refresh(const std::vector<EndpointRouteRequest>& requests) {
  std::vector<EndpointRouteReport> reports(requests.size());
  std::string error_v4;
  std::string error_v6;
  std::vector<HostRoute> v4 = dump_host_routes(AF_INET, &error_v4);
  std::vector<HostRoute> v6 = dump_host_routes(AF_INET6, &error_v6);
  if (error_v4.empty() && error_v6.empty()) {
    forget_vanished(v4, v6);
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const bool v4_endpoint = requests[i].endpoint.is_v4();
    const std::string& error = v4_endpoint ? error_v4 : error_v6;
    if (!error.empty()) {
      reports[i].problems.push_back(error);
      continue;
    }
    refresh_one(requests[i], v4_endpoint ? v4 : v6, reports[i]);
  }
  // Endpoints that are gone (peer removed, device vanished) get their original routes back.
  for (auto it = changed_.begin(); it != changed_.end();) {
    bool requested = std::any_of(requests.begin(), requests.end(), [&](const EndpointRouteRequest& r) {
      return r.endpoint == it->now.destination;
    });
    if (requested) {
      ++it;
      continue;
    }
    put_back(*it);
    it = changed_.erase(it);
  }
  return reports;
}

void EndpointRoutes::refresh_one(const EndpointRouteRequest& request, const std::vector<HostRoute>& routes,
                                 EndpointRouteReport& report) {
  std::vector<int> stale_devices;  // of the stale host routes reported: the lookup names them again
  for (const HostRoute& route : routes) {
    if (!(route.destination == request.endpoint)) continue;
    if (Changed* ours = changed_of(route)) {
      if (request.active &&
          (ours->now.ifindex != request.active->ifindex || ours->now.gateway != request.active->gateway)) {
        point_at_active(*ours, *request.active, report);
      }
      if (ours->original) {
        report.fixed.push_back(describe(*ours->original) + " -> " +
                               nexthop_text(ours->now.ifindex, ours->now.gateway));
      } else {
        report.guard = describe(ours->now);
      }
      continue;
    }
    auto owner = uplink_tables_.find(route.table);
    if (owner != uplink_tables_.end() && owner->second == route.ifindex) {
      continue;  // a copy in the uplink's own table (mwan3's table N), right for that table
    }
    if (!request.active || route.ifindex == request.active->ifindex) {
      continue;  // nothing online to compare with, or already through the active uplink
    }
    if (!request.fix) {
      report.stale.push_back(describe(route) + " (active uplink: dev " +
                             device_name(request.active->ifindex) + ")");
      stale_devices.push_back(route.ifindex);
      continue;
    }
    Changed changed{route, route};
    point_at_active(changed, *request.active, report);
    if (changed.now.ifindex == request.active->ifindex) {
      report.fixed.push_back(describe(route) + " -> " +
                             nexthop_text(changed.now.ifindex, changed.now.gateway));
      changed_.push_back(changed);
    }
  }
  if (request.active) {
    guard_full_tunnel(request, report);
    report_lookup_disagreement(request, stale_devices, report);
  }
}

EndpointRoutes::Changed* EndpointRoutes::changed_of(const HostRoute& route) {
  for (Changed& changed : changed_) {
    if (same_key(changed.now, route)) return &changed;
  }
  return nullptr;
}

void EndpointRoutes::point_at_active(Changed& changed, const ActiveUplink& active,
                                     EndpointRouteReport& report) {
  HostRoute next = changed.now;
  next.ifindex = active.ifindex;
  next.gateway = active.gateway;
  next.scope = active.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
  next.nexthops = 1;
  int err = write_route(sock_, next, NLM_F_REPLACE);
  if (err != 0) {
    report.problems.push_back("replacing " + describe(changed.now) + " with " +
                              nexthop_text(next.ifindex, next.gateway) + ": " + errno_text(err));
    return;
  }
  changed.now = next;
}

void EndpointRoutes::guard_full_tunnel(const EndpointRouteRequest& request, EndpointRouteReport& report) {
  if (request.wg_ifindex <= 0 || !report.guard.empty()) return;
  int oif = route_lookup_ifindex(request.endpoint, request.wg_fwmark);
  if (oif != request.wg_ifindex) return;
  HostRoute guard;
  guard.destination = request.endpoint;
  guard.table = RT_TABLE_MAIN;
  guard.protocol = RTPROT_STATIC;
  guard.ifindex = request.active->ifindex;
  guard.gateway = request.active->gateway;
  guard.scope = guard.gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
  guard.nexthops = 1;
  const std::string loop = request.endpoint.str() + " is routed into its own tunnel dev " + device_name(oif);
  int err = write_route(sock_, guard, NLM_F_EXCL);
  if (err != 0) {
    report.problems.push_back(loop + "; adding " + describe(guard) + ": " + errno_text(err));
    return;
  }
  changed_.push_back(Changed{guard, std::nullopt});
  report.guard = describe(guard);
  if (route_lookup_ifindex(request.endpoint, request.wg_fwmark) == request.wg_ifindex) {
    report.problems.push_back(loop + " even with " + describe(guard) +
                              ": an ip rule before the main table sends it there; give the device an fwmark");
  }
}

// Steering moves the tunnel's packets whatever the routes say, but a person reading `ip route get`
// would see them leave elsewhere, and so does anything on the router that is not steered (a
// connection to the endpoint's address outside the tunnel). A host route pinned elsewhere is
// already on the list; a lookup into the tunnel is the guard's concern; no route at all is left to
// WireGuard's own error.
void EndpointRoutes::report_lookup_disagreement(const EndpointRouteRequest& request,
                                                const std::vector<int>& stale_devices,
                                                EndpointRouteReport& report) {
  const int oif = route_lookup_ifindex(request.endpoint, request.wg_fwmark);
  if (oif <= 0 || oif == request.active->ifindex || oif == request.wg_ifindex) return;
  if (std::find(stale_devices.begin(), stale_devices.end(), oif) != stale_devices.end()) return;
  report.stale.push_back(lookup_text(request.endpoint, request.wg_fwmark) + ": dev " + device_name(oif) +
                         " (active uplink: dev " + device_name(request.active->ifindex) + ")");
}

// A changed route that is no longer in the kernel was removed by someone else (or went with its
// device): it is theirs to manage now, nothing to put back.
void EndpointRoutes::forget_vanished(const std::vector<HostRoute>& v4, const std::vector<HostRoute>& v6) {
  std::erase_if(changed_, [&](const Changed& changed) {
    const std::vector<HostRoute>& routes = changed.now.destination.is_v4() ? v4 : v6;
    return std::none_of(routes.begin(), routes.end(),
                        [&](const HostRoute& r) { return same_key(r, changed.now); });
  });
}

void EndpointRoutes::put_back(const Changed& changed) {
  if (changed.original) {
    // Fails when the original's device is gone; ours then stays, still the better route.
    write_route(sock_, *changed.original, NLM_F_REPLACE);
  } else {
    delete_route(sock_, changed.now);
  }
}

void EndpointRoutes::restore_all() {
  for (const Changed& changed : changed_) put_back(changed);
  changed_.clear();
}

}  // namespace uplinkd::wireguard
