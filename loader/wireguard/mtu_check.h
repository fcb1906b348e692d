// Does a WireGuard device's MTU fit every uplink its endpoints may ride? WireGuard adds its outer
// headers to every packet (IPv4: 20 IP + 8 UDP + 32 WireGuard = 60 bytes; IPv6: 80), so a tunnel
// of MTU m needs a path MTU of m + overhead on the uplink its outer packets take. uplinkd moves
// tunnels between uplinks, and a backup often has a smaller path (PPPoE 1492, a modem's VLAN), so
// each uplink of the endpoint's policy is checked against its measured path MTU
// (field-reports/wireguard-slow-diagnosis.txt: big packets die silently where ICMP is filtered).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace uplinkd::wireguard {

constexpr int kOuterOverheadV4 = 60;
constexpr int kOuterOverheadV6 = 80;

// The outer headers' size for an endpoint of `family` (AF_INET or AF_INET6).
int outer_overhead(int family);

// An uplink the endpoint's policy may send it by, with its measured path MTU (nullopt: not known yet).
struct UplinkPathMtu {
  std::string interface;
  std::optional<int> path_mtu;
};

struct TunnelMtuCheck {
  int device_mtu = 0;
  int overhead = 0;
  // The largest device MTU that fits every measured uplink (nullopt: none measured).
  std::optional<int> largest_fitting;
  // One sentence per uplink the device does not fit, naming the device and its MTU, the uplink and
  // its path MTU, and the largest MTU that fits them all.
  std::vector<std::string> problems;
};

TunnelMtuCheck check_tunnel_mtu(const std::string& device, int device_mtu, int endpoint_family,
                                const std::vector<UplinkPathMtu>& uplinks);

// The TCP MSS that fits inner packets of `inner_family` through a WireGuard device of `device_mtu`
// into an uplink of `path_mtu`, with outer headers of `overhead` bytes (0 when the path is too
// small for anything sensible).
uint16_t mss_for_path(int path_mtu, int overhead, int inner_family, int device_mtu);

}  // namespace uplinkd::wireguard
