#include "daemon/device_readiness.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace uplinkd {
namespace {

bool same_address(const sockaddr* a, const sockaddr* b) {
  if (a == nullptr || b == nullptr || a->sa_family != b->sa_family) return false;
  if (a->sa_family == AF_INET) {
    return std::memcmp(&reinterpret_cast<const sockaddr_in*>(a)->sin_addr,
                       &reinterpret_cast<const sockaddr_in*>(b)->sin_addr, sizeof(in_addr)) == 0;
  }
  return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr,
                     &reinterpret_cast<const sockaddr_in6*>(b)->sin6_addr, sizeof(in6_addr)) == 0;
}

}  // namespace

DeviceAddresses read_device_addresses(const std::string& device, int family) {
  DeviceAddresses have;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) {
    // Cannot tell: count as present, so the kernel's answer to the route decides as before.
    return {true, true};
  }
  for (const ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != family || device != a->ifa_name) continue;
    have.local = true;
    // glibc puts IFA_ADDRESS there when it differs from IFA_LOCAL, which is a peer's address.
    const sockaddr* other = a->ifa_dstaddr;
    if ((a->ifa_flags & IFF_POINTOPOINT) != 0 && other != nullptr && !same_address(a->ifa_addr, other))
      have.peer = true;
  }
  freeifaddrs(list);
  return have;
}

bool waits_for_addresses(const LinkState& link) { return link.point_to_point || !link.ethernet; }

std::string missing_addresses(const LinkState& link, int family, const DeviceAddresses& have) {
  if (!waits_for_addresses(link) || have.local) return "";
  return std::string("has no ") + (family == AF_INET ? "IPv4" : "IPv6") + " address yet";
}

}  // namespace uplinkd
