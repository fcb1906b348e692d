#include "common/link_mtu.h"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace uplinkd {

std::optional<int> link_mtu(const std::string& device) {
  if (device.empty() || device.size() >= IFNAMSIZ) return std::nullopt;
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  ifreq request{};
  std::memcpy(request.ifr_name, device.data(), device.size());
  const int err = ioctl(fd, SIOCGIFMTU, &request);
  close(fd);
  if (err != 0) return std::nullopt;
  return request.ifr_mtu;
}

}  // namespace uplinkd
