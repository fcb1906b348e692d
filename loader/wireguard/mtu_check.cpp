#include "wireguard/mtu_check.h"

#include <sys/socket.h>

#include <algorithm>
#include <utility>

namespace uplinkd::wireguard {

int outer_overhead(int family) { return family == AF_INET6 ? kOuterOverheadV6 : kOuterOverheadV4; }

TunnelMtuCheck check_tunnel_mtu(const std::string& device, int device_mtu, int endpoint_family,
                                const std::vector<UplinkPathMtu>& uplinks) {
  TunnelMtuCheck check;
  check.device_mtu = device_mtu;
  check.overhead = outer_overhead(endpoint_family);
  for (const UplinkPathMtu& u : uplinks) {
    if (!u.path_mtu) continue;
    const int fits = *u.path_mtu - check.overhead;
    check.largest_fitting = check.largest_fitting ? std::min(*check.largest_fitting, fits) : fits;
  }
  const std::string family = endpoint_family == AF_INET6 ? "IPv6" : "IPv4";
  for (const UplinkPathMtu& u : uplinks) {
    if (!u.path_mtu || device_mtu + check.overhead <= *u.path_mtu) continue;
    std::string problem = device + " (MTU " + std::to_string(device_mtu) + ") does not fit uplink ";
    problem += u.interface + " (path MTU " + std::to_string(*u.path_mtu) + "): ";
    problem += std::to_string(device_mtu) + " + " + std::to_string(check.overhead) + " bytes of ";
    problem += family + " outer headers = " + std::to_string(device_mtu + check.overhead);
    problem += "; the largest MTU that fits every uplink of its policy is ";
    problem += std::to_string(*check.largest_fitting) + " (or set option clamp_mss '1' for TCP)";
    check.problems.push_back(std::move(problem));
  }
  return check;
}

uint16_t mss_for_path(int path_mtu, int overhead, int inner_family, int device_mtu) {
  // WireGuard pads each inner packet to a multiple of 16 bytes, but never beyond the device MTU. So
  // a device that fits the path fits it whole; otherwise a segment fits only when its padded size
  // does (1340 bytes over a 1400-byte path would leave as 1344 + 60). Then the inner IP + TCP
  // headers without options (the peers' MSS already allows for the options they use).
  const int room = path_mtu - overhead;
  const int inner = device_mtu > 0 && device_mtu <= room ? device_mtu : room / 16 * 16;
  const int headers = inner_family == AF_INET6 ? 60 : 40;
  const int mss = inner - headers;
  return mss >= 536 ? static_cast<uint16_t>(mss) : 0;
}

}  // namespace uplinkd::wireguard
