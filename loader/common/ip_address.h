// An IPv4 or IPv6 address, parsed from text and printable back.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace uplinkd {

struct IpAddress {
  int family = 0;                   // AF_INET or AF_INET6; 0 = unset
  std::array<uint8_t, 16> bytes{};  // IPv4 in the first 4 bytes, the rest zero

  static std::optional<IpAddress> parse(std::string_view text);
  static IpAddress from_v4(uint32_t network_order);
  [[nodiscard]] std::string str() const;
  [[nodiscard]] bool is_v4() const { return family == 2; }
  [[nodiscard]] bool is_v6() const { return family == 10; }
  [[nodiscard]] uint32_t v4_network_order() const;
  bool operator==(const IpAddress&) const = default;
};

}  // namespace uplinkd
