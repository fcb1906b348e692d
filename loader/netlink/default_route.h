// uplinkd's own default route in the main table, one per address family, so that traffic the router
// itself originates (and unmarked forwarded traffic) follows the policy of mwan3's default rule: one
// online member gives a plain route via its gateway, several at the lowest metric a multipath route
// with their weights, none no route at all (the system's own routes apply again). Its metric sits
// below netifd's per-uplink default routes, so it wins while it exists. Removed exactly at stop.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"

struct nl_sock;  // libnl's, at global scope (see uplink_routes.h)

namespace uplinkd::netlink {

class LocalDefaultRoute {
 public:
  struct Hop {
    int ifindex = 0;
    std::optional<IpAddress> gateway;  // none: a link-scope nexthop (point-to-point uplinks)
    int weight = 1;                    // 1..256, as `ip route ... weight`
    bool operator==(const Hop&) const = default;
  };

  LocalDefaultRoute();
  ~LocalDefaultRoute();  // removes what is installed
  LocalDefaultRoute(const LocalDefaultRoute&) = delete;
  LocalDefaultRoute& operator=(const LocalDefaultRoute&) = delete;

  // Makes the main table's `family` default route at `metric` go through `hops` (empty: removes it).
  // The first install refuses to replace a default route at that metric that uplinkd did not add
  // (EEXIST, with a sentence naming the option that moves it); later calls replace uplinkd's own.
  // Cheap when nothing changed. Returns 0 or a negative errno; `error` names the route.
  int set(int family, uint32_t metric, const std::vector<Hop>& hops, std::string* error);
  void remove(int family);
  void remove_all();

  // What is installed for `family` (empty: nothing), for status output and tests.
  [[nodiscard]] std::vector<Hop> hops(int family) const;

 private:
  struct Installed {
    int family = 0;
    uint32_t metric = 0;
    std::vector<Hop> hops;
  };
  Installed* find(int family);
  int send(const Installed& route, bool add, bool replace);

  std::vector<Installed> installed_;
  ::nl_sock* sock_ = nullptr;
};

// "IPv4 default route metric 1 via 192.0.2.1 dev wan1 weight 3 via ...", for logs and errors.
std::string describe_default_route(int family, uint32_t metric,
                                   const std::vector<LocalDefaultRoute::Hop>& hops);

}  // namespace uplinkd::netlink
