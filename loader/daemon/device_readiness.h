// Whether an uplink's device holds the addresses its table's routes need, so that bring-up waits for
// them (and is retried when the kernel announces an address) instead of failing and waiting for a timer.
//
// A point-to-point device (PPPoE's pppoe-wan, a tun or a raw-IP modem) appears, and is up and running,
// before pppd or the modem's manager gives it its addresses: IPCP finishes later, and pppd sets the
// local address first and the peer a moment after (SIOCSIFADDR, then SIOCSIFDSTADDR, which replaces the
// address). A default route via the peer is refused (ENETUNREACH) until the peer address exists, and a
// probe has no source address before that.
#pragma once

#include <string>

#include "daemon/link_state.h"

namespace uplinkd {

struct DeviceAddresses {
  bool local = false;  // an address of the family on the device
  bool peer = false;   // one of them with a peer address of its own (IFA_ADDRESS != IFA_LOCAL)
};

// The device's addresses of `family` (AF_INET, AF_INET6), as getifaddrs(3) reads them by netlink.
DeviceAddresses read_device_addresses(const std::string& device, int family);

// Devices that get their addresses after they appear and come up, from a daemon of their own
// (pppd, a modem manager): point-to-point ones and those without an Ethernet header. Ethernet devices
// keep their own rule: they wait for a gateway.
bool waits_for_addresses(const LinkState& link);

// What such a device still lacks before the uplink's routes go in, as the end of a sentence ("has
// no IPv4 address yet"); "" when nothing (or when the device is not one that waits). A peer address
// is not required here: a route via the peer is refused by the kernel (ENETUNREACH) until the peer
// exists, and the daemon waits on that answer instead, so a point-to-point device without a peer
// (a tun with a /24, WireGuard) is not held back.
std::string missing_addresses(const LinkState& link, int family, const DeviceAddresses& have);

}  // namespace uplinkd
