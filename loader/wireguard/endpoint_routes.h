// Host routes to WireGuard endpoints (libnl-route-3). netifd pins a /32 or /128 to each endpoint
// through whatever uplink was up when the tunnel started (`proto static`) and never revisits it
// (../shared/field-reports/wireguard-stuck-on-backup-uplink.txt). EndpointRoutes finds such routes
// in every table, replaces them to go through the endpoint's active uplink (remembering the
// original, put back by restore_all()) or only reports them when fixing is off. It also guards
// full-tunnel setups (wireguard-full-tunnel-endpoint-loop.txt): when `ip route get <endpoint>`,
// with the device's fwmark, resolves to the WireGuard device itself, it adds a host route through
// the active uplink so that the tunnel's own packets never enter the tunnel.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"

struct nl_sock;

namespace uplinkd::wireguard {

// Where an endpoint's packets should leave now.
struct ActiveUplink {
  int ifindex = 0;
  std::optional<IpAddress> gateway;  // none: on-link (point-to-point uplinks)
};

struct EndpointRouteRequest {
  IpAddress endpoint;
  std::optional<ActiveUplink> active;  // nullopt: nothing online; routes are left alone
  bool fix = true;                     // fix_endpoint_routes
  int wg_ifindex = 0;                  // the WireGuard device carrying this endpoint (0: unknown)
  uint32_t wg_fwmark = 0;              // its fwmark, used for the route lookup (0: none)
};

struct EndpointRouteReport {
  std::vector<std::string> stale;     // host routes pinned elsewhere, left as they are (fix off),
                                      // and `ip route get` leaving by another device than the active uplink
  std::vector<std::string> fixed;     // "<original> -> via <gw> dev <dev>"
  std::string guard;                  // the full-tunnel guard route, when one is in place
  std::vector<std::string> problems;  // a request the kernel refused, with its errno
};

// A /32 or /128 route as found in a table (its first nexthop).
struct HostRoute {
  IpAddress destination;
  uint32_t table = 0;
  uint32_t priority = 0;
  uint8_t tos = 0;
  uint8_t protocol = 0;
  uint8_t scope = 0;
  int ifindex = 0;
  std::optional<IpAddress> gateway;
  int nexthops = 0;
};

// Every unicast host route of `family` in every table but local; `error` set on failure.
std::vector<HostRoute> dump_host_routes(int family, std::string* error);

class EndpointRoutes {
 public:
  EndpointRoutes();
  ~EndpointRoutes();  // restore_all()
  EndpointRoutes(const EndpointRoutes&) = delete;
  EndpointRoutes& operator=(const EndpointRoutes&) = delete;

  // Routing table id -> the ifindex of the uplink that owns it (mwan3's per-uplink tables): a host
  // route there through its own uplink is that table's business, not a stale pin.
  void set_uplink_tables(std::map<uint32_t, int> tables) { uplink_tables_ = std::move(tables); }

  // Brings the host routes of every endpoint in `requests` in line (one report each, same order).
  // What was changed for endpoints no longer requested is put back.
  std::vector<EndpointRouteReport> refresh(const std::vector<EndpointRouteRequest>& requests);
  // Puts back every replaced route and deletes every guard route.
  void restore_all();

 private:
  // A route this object changed: `original` is what to put back (nullopt: a guard route it added).
  struct Changed {
    HostRoute now;
    std::optional<HostRoute> original;
  };

  void refresh_one(const EndpointRouteRequest& request, const std::vector<HostRoute>& routes,
                   EndpointRouteReport& report);
  Changed* changed_of(const HostRoute& route);
  void point_at_active(Changed& changed, const ActiveUplink& active, EndpointRouteReport& report);
  void guard_full_tunnel(const EndpointRouteRequest& request, EndpointRouteReport& report);
  // `ip route get <endpoint>` (with the device's fwmark) leaving by another device than the active
  // uplink goes on the stale list, unless a stale host route to that device is there already.
  void report_lookup_disagreement(const EndpointRouteRequest& request, const std::vector<int>& stale_devices,
                                  EndpointRouteReport& report);
  void forget_vanished(const std::vector<HostRoute>& v4, const std::vector<HostRoute>& v6);
  void put_back(const Changed& changed);

  std::map<uint32_t, int> uplink_tables_;
  std::vector<Changed> changed_;
  ::nl_sock* sock_ = nullptr;
};

// `ip route get` for one address with an optional fwmark: the output ifindex, or 0 (no route) or
// a negative errno.
int route_lookup_ifindex(const IpAddress& destination, uint32_t fwmark);

}  // namespace uplinkd::wireguard
