// WireGuard devices and peers as uplinkd needs them (which endpoints exist, and for which device),
// and the two ways implementations describe them: kernel WireGuard's generic netlink answer to
// WG_CMD_GET_DEVICE (<linux/wireguard.h>) and the cross-platform UAPI text of userspace
// implementations such as wireguard-go (`get=1`, https://www.wireguard.com/xplatform/).
// Pure parsing, no kernel access: the messages come from discovery.cpp or from tests.
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_address.h"

namespace uplinkd::wireguard {

// A peer's UDP endpoint: address and port.
struct Endpoint {
  IpAddress address;
  uint16_t port = 0;  // host order

  // "192.0.2.1:51820" or "[2001:db8::1]:51820" (the UAPI and `wg` form).
  [[nodiscard]] std::string str() const;
  bool operator==(const Endpoint&) const = default;
};

// Parses "ip:port" or "[ipv6]:port" with an IP literal. nullopt for anything else, names included.
std::optional<Endpoint> parse_endpoint(std::string_view text);

struct Peer {
  std::string public_key;                // base64, as `wg` shows it
  std::optional<Endpoint> endpoint;      // nullopt: the peer has none (it has not contacted us yet)
  std::vector<std::string> allowed_ips;  // "10.0.0.0/24"
  int64_t last_handshake_s = 0;          // seconds since the epoch; 0: never
};

struct Device {
  std::string name;
  int ifindex = 0;  // 0 when the implementation does not say (UAPI)
  uint16_t listen_port = 0;
  uint32_t fwmark = 0;  // 0: none
  std::vector<Peer> peers;
  std::string implementation;  // "kernel" or "userspace"
};

// Base64 of a 32-byte key (44 characters with the '=' padding), as `wg` prints keys.
std::string key_to_base64(const uint8_t* key, size_t size);
// A key in the UAPI's 64 hex digits, as base64; nullopt when it is not 64 hex digits.
std::optional<std::string> hex_key_to_base64(std::string_view hex);

// Parses the answer to `get=1\n\n` (key=value lines, peers starting at public_key=, ending in
// errno=N). Returns nullopt and says why in `error` when the text is malformed or errno is not 0.
std::optional<Device> parse_uapi_get(std::string_view text, const std::string& device_name,
                                     std::string* error);

// Coalesces the messages of one WG_CMD_GET_DEVICE dump into a Device: a device with many peers
// comes in several messages, each repeating the device name; a peer whose allowed IPs did not fit
// is continued in the next message under the same public key.
class GenlDeviceParser {
 public:
  // One netlink message of the dump (nlmsghdr + genlmsghdr + attributes). Returns false and says
  // why in `error` when it is malformed; what was parsed before stays.
  bool add_message(const nlmsghdr* message, std::string* error);
  [[nodiscard]] const Device& device() const { return device_; }

 private:
  bool add_peer(const nlattr* peer, std::string* error);
  Device device_;
};

}  // namespace uplinkd::wireguard
