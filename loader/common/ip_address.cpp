#include "common/ip_address.h"

#include <arpa/inet.h>

#include <cstring>

namespace uplinkd {

static_assert(AF_INET == 2 && AF_INET6 == 10, "IpAddress::is_v4/is_v6 assume Linux family numbers");

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  std::string s(text);
  IpAddress a;
  if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET;
    return a;
  }
  if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) {
    a.family = AF_INET6;
    return a;
  }
  return std::nullopt;
}

IpAddress IpAddress::from_v4(uint32_t network_order) {
  IpAddress a;
  a.family = AF_INET;
  std::memcpy(a.bytes.data(), &network_order, 4);
  return a;
}

uint32_t IpAddress::v4_network_order() const {
  uint32_t v = 0;
  std::memcpy(&v, bytes.data(), 4);
  return v;
}

std::string IpAddress::str() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == 0 || inet_ntop(family, bytes.data(), buf, sizeof buf) == nullptr) return "?";
  return buf;
}

}  // namespace uplinkd
