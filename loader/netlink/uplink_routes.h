// The kernel routing state uplinkd owns for an uplink (libnl-route-3): table N with the uplink's
// default route, and the rule `fwmark mark(N)/mask lookup N` (pref 2000+N) that sends probe
// sockets (and, later, classified traffic) through it. uplinkd removes exactly what it added.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/ip_address.h"

// libnl's socket. Declared here, at global scope: `struct nl_sock*` written first inside the
// namespace would declare a different type, uplinkd::netlink::nl_sock.
struct nl_sock;

namespace uplinkd::netlink {

// The gateway of the main table's default route through `ifindex` (nullopt: none).
std::optional<IpAddress> find_default_gateway(int ifindex, int family);

class UplinkRoutes {
 public:
  UplinkRoutes();
  ~UplinkRoutes();  // removes everything still installed
  UplinkRoutes(const UplinkRoutes&) = delete;
  UplinkRoutes& operator=(const UplinkRoutes&) = delete;

  // Installs (or replaces) the default route of `table` through ifindex/gateway (no gateway:
  // a link-scope route) for `family`, and the fwmark rule. Returns 0 or a negative errno;
  // `error` gets a sentence naming what failed.
  int install(uint32_t table, int ifindex, int family, const std::optional<IpAddress>& gateway, uint32_t mark,
              uint32_t mask, uint32_t rule_pref, std::string* error);
  // Removes what install() added for this table and family.
  void remove(uint32_t table, int family);
  void remove_all();

  // Makes the kernel hold again what install() put there: each table's default route is read back by
  // dump and re-added where it is missing, each fwmark rule re-added where it is missing. They go
  // without uplinkd being told in a way it could miss: notifications lost to a receive-buffer overrun,
  // a device taken down and up between two device polls (the kernel drops every route through a device
  // that goes down, in every table), a table or rule flushed by hand. Entries whose device is down or
  // gone are left alone: they are the device poll's (remove(), or install() on the new device).
  // Nothing is written when everything is in place, so it is cheap enough for every periodic refresh
  // (one dump of each uplink table). Returns 0 or the first negative errno; `error` names what failed;
  // `repaired`, when given, gets the number of routes and rules put back.
  int resync(std::string* error, int* repaired = nullptr);

 private:
  struct Installed {
    uint32_t table = 0;
    int family = 0;
    int ifindex = 0;
    std::optional<IpAddress> gateway;
    uint32_t mark = 0;
    uint32_t mask = 0;
    uint32_t pref = 0;
    bool rule_owned = false;  // false: an identical rule existed before install (EEXIST)
  };
  Installed& remember_route(uint32_t table, int family, int ifindex, const std::optional<IpAddress>& gateway);
  void delete_rule_of(const Installed& entry);
  int restore(Installed& entry, int* repaired, std::string* error);
  void uninstall(const Installed& entry);

  std::vector<Installed> installed_;
  ::nl_sock* sock_ = nullptr;
};

}  // namespace uplinkd::netlink
