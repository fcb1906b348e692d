// A device's state as the daemon polls it: present (ifindex), up and running, Ethernet or not,
// point-to-point or not.
#pragma once

#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace uplinkd {

struct LinkState {
  int ifindex = 0;
  bool up = false;
  bool ethernet = true;
  bool point_to_point = false;  // IFF_POINTOPOINT: PPP, tun, raw-IP modems
};

inline LinkState read_link(const std::string& device) {
  LinkState s;
  s.ifindex = static_cast<int>(if_nametoindex(device.c_str()));
  if (s.ifindex == 0) return s;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return s;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, device.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
    s.up = (ifr.ifr_flags & IFF_UP) && (ifr.ifr_flags & IFF_RUNNING);
    s.point_to_point = (ifr.ifr_flags & IFF_POINTOPOINT) != 0;
  }
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) == 0) s.ethernet = ifr.ifr_hwaddr.sa_family == ARPHRD_ETHER;
  close(fd);
  return s;
}

}  // namespace uplinkd
