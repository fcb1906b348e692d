// The main table's default route that uplinkd owns, through libnl-route-3 (see default_route.h).
#include "netlink/default_route.h"

#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "lifecycle/teardown.h"
#include "netlink/nl_util.h"

namespace uplinkd::netlink {
namespace {

std::string device_name(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (ifindex > 0 && if_indextoname(static_cast<unsigned int>(ifindex), name) != nullptr) return name;
  return "ifindex " + std::to_string(ifindex);
}

// libnl passes a nexthop's weight to the kernel as rtnh_hops, which is `ip route`'s weight minus 1.
uint8_t rtnh_hops_of(int weight) { return static_cast<uint8_t>(std::clamp(weight, 1, 256) - 1); }

RoutePtr build_route(int family, uint32_t metric, const std::vector<LocalDefaultRoute::Hop>& hops) {
  RoutePtr route(rtnl_route_alloc());
  if (!route) return nullptr;
  rtnl_route_set_family(route.get(), static_cast<uint8_t>(family));
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_type(route.get(), RTN_UNICAST);
  rtnl_route_set_protocol(route.get(), RTPROT_STATIC);
  rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
  rtnl_route_set_priority(route.get(), metric);
  const uint8_t zero[16] = {};
  AddrPtr dst(nl_addr_build(family, zero, address_size(family)));
  if (!dst) return nullptr;
  nl_addr_set_prefixlen(dst.get(), 0);
  rtnl_route_set_dst(route.get(), dst.get());
  for (const auto& h : hops) {
    rtnl_nexthop* hop = rtnl_route_nh_alloc();
    if (hop == nullptr) return nullptr;
    rtnl_route_nh_set_ifindex(hop, h.ifindex);
    if (h.gateway) {
      AddrPtr via(nl_addr_build(family, h.gateway->bytes.data(), address_size(family)));
      if (!via) {
        rtnl_route_nh_free(hop);
        return nullptr;
      }
      rtnl_route_nh_set_gateway(hop, via.get());
    }
    if (hops.size() > 1) rtnl_route_nh_set_weight(hop, rtnh_hops_of(h.weight));
    rtnl_route_add_nexthop(route.get(), hop);  // owned by the route from here
  }
  return route;
}

}  // namespace

std::string describe_default_route(int family, uint32_t metric,
                                   const std::vector<LocalDefaultRoute::Hop>& hops) {
  std::string s =
      std::string(family == AF_INET ? "IPv4" : "IPv6") + " default route metric " + std::to_string(metric);
  for (const auto& h : hops) {
    if (h.gateway) s += " via " + h.gateway->str();
    s += " dev " + device_name(h.ifindex);
    if (hops.size() > 1) s += " weight " + std::to_string(h.weight);
  }
  return s;
}

LocalDefaultRoute::LocalDefaultRoute() : sock_(connect_route_socket().release()) {}

LocalDefaultRoute::~LocalDefaultRoute() {
  if (!lifecycle::keep_kernel_state()) remove_all();
  if (sock_ != nullptr) nl_socket_free(sock_);
}

LocalDefaultRoute::Installed* LocalDefaultRoute::find(int family) {
  for (auto& i : installed_) {
    if (i.family == family) return &i;
  }
  return nullptr;
}

int LocalDefaultRoute::send(const Installed& route, bool add, bool replace) {
  RoutePtr nl = build_route(route.family, route.metric, route.hops);
  if (!nl) return -ENOMEM;
  nl_msg* raw = nullptr;
  const int built = add ? rtnl_route_build_add_request(nl.get(), replace ? NLM_F_REPLACE : NLM_F_EXCL, &raw)
                        : rtnl_route_build_del_request(nl.get(), 0, &raw);
  return send_built(sock_, built, raw);
}

int LocalDefaultRoute::set(int family, uint32_t metric, const std::vector<Hop>& hops, std::string* error) {
  if (hops.empty()) {
    remove(family);
    return 0;
  }
  auto fail = [&](int err, const std::string& why) {
    if (error != nullptr) *error = "adding " + describe_default_route(family, metric, hops) + ": " + why;
    return err;
  };
  if (sock_ == nullptr) return fail(-ENOTCONN, "no rtnetlink socket");
  Installed* current = find(family);
  if (current != nullptr && current->metric == metric && current->hops == hops) return 0;
  if (current != nullptr && current->metric != metric) {
    remove(family);
    current = nullptr;
  }
  Installed wanted{family, metric, hops};
  // IPv6 merges routes of one metric into a multipath route instead of replacing a multipath route
  // with a single one on every kernel, so an IPv6 change is a delete and a fresh add.
  if (current != nullptr && family == AF_INET6) {
    remove(family);
    current = nullptr;
  }
  int err = send(wanted, /*add=*/true, /*replace=*/current != nullptr);
  // A start that adopts a predecessor's state finds the route that predecessor added: its own.
  if (err == -EEXIST && lifecycle::adopting()) err = send(wanted, /*add=*/true, /*replace=*/true);
  if (err == -EEXIST) {
    return fail(err, "the main table already holds a default route with metric " + std::to_string(metric) +
                         " that uplinkd did not add; set `option local_route_metric` in mwan3's globals to a "
                         "free metric below the uplinks' (or `option local_route '0'`)");
  }
  if (err != 0) return fail(err, errno_text(err));
  if (current != nullptr) {
    *current = wanted;
  } else {
    installed_.push_back(wanted);
  }
  return 0;
}

void LocalDefaultRoute::remove(int family) {
  for (auto it = installed_.begin(); it != installed_.end();) {
    if (it->family == family) {
      if (sock_ != nullptr) send(*it, /*add=*/false, false);  // ENOENT/ESRCH: its device took it along
      it = installed_.erase(it);
    } else {
      ++it;
    }
  }
}

void LocalDefaultRoute::remove_all() {
  for (int family : {AF_INET, AF_INET6}) remove(family);
}

std::vector<LocalDefaultRoute::Hop> LocalDefaultRoute::hops(int family) const {
  for (const auto& i : installed_) {
    if (i.family == family) return i.hops;
  }
  return {};
}

}  // namespace uplinkd::netlink
