#include "wireguard/peer_parse.h"

#include <arpa/inet.h>
#include <linux/genetlink.h>
#include <linux/wireguard.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <charconv>
#include <cstring>
#include <functional>

namespace uplinkd::wireguard {
namespace {

// ---- endpoints and keys -------------------------------------------------------------------------

std::optional<uint16_t> parse_port(std::string_view text) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 10);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(value);
}

constexpr char kBase64Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// ---- netlink attributes (no libnl here: the parser is unit-tested on hand-built messages) ------

// Calls `visit` for each attribute in [data, data + size); false when one overruns the buffer.
bool for_each_attribute(const void* data, size_t size, const std::function<bool(const nlattr*)>& visit) {
  const auto* at = static_cast<const uint8_t*>(data);
  size_t left = size;
  while (left >= NLA_HDRLEN) {
    const auto* attribute = reinterpret_cast<const nlattr*>(at);
    if (attribute->nla_len < NLA_HDRLEN || attribute->nla_len > left) {
      return false;
    }
    if (!visit(attribute)) {
      return false;
    }
    size_t step = NLA_ALIGN(attribute->nla_len);
    if (step >= left) {
      break;
    }
    at += step;
    left -= step;
  }
  return true;
}

int attribute_type(const nlattr* attribute) { return attribute->nla_type & NLA_TYPE_MASK; }
const uint8_t* payload(const nlattr* attribute) {
  return reinterpret_cast<const uint8_t*>(attribute) + NLA_HDRLEN;
}
size_t payload_size(const nlattr* attribute) { return attribute->nla_len - NLA_HDRLEN; }

template <typename T>
std::optional<T> read_scalar(const nlattr* attribute) {
  if (payload_size(attribute) < sizeof(T)) {
    return std::nullopt;
  }
  T value;
  std::memcpy(&value, payload(attribute), sizeof value);
  return value;
}

std::optional<Endpoint> endpoint_from_sockaddr(const uint8_t* data, size_t size) {
  sa_family_t family = 0;
  if (size < sizeof family) {
    return std::nullopt;
  }
  std::memcpy(&family, data, sizeof family);
  Endpoint endpoint;
  if (family == AF_INET && size >= sizeof(sockaddr_in)) {
    sockaddr_in address{};
    std::memcpy(&address, data, sizeof address);
    endpoint.address = IpAddress::from_v4(address.sin_addr.s_addr);
    endpoint.port = ntohs(address.sin_port);
  } else if (family == AF_INET6 && size >= sizeof(sockaddr_in6)) {
    sockaddr_in6 address{};
    std::memcpy(&address, data, sizeof address);
    endpoint.address.family = AF_INET6;
    std::memcpy(endpoint.address.bytes.data(), &address.sin6_addr, 16);
    endpoint.port = ntohs(address.sin6_port);
  } else {
    return std::nullopt;  // AF_UNSPEC: the kernel sends no endpoint attribute then, but be safe
  }
  if (endpoint.port == 0) {
    return std::nullopt;
  }
  return endpoint;
}

std::optional<std::string> allowed_ip(const nlattr* entry) {
  std::optional<uint16_t> family;
  std::optional<uint8_t> cidr;
  const uint8_t* address = nullptr;
  size_t address_size = 0;
  bool ok = for_each_attribute(payload(entry), payload_size(entry), [&](const nlattr* a) {
    switch (attribute_type(a)) {
      case WGALLOWEDIP_A_FAMILY:
        family = read_scalar<uint16_t>(a);
        break;
      case WGALLOWEDIP_A_CIDR_MASK:
        cidr = read_scalar<uint8_t>(a);
        break;
      case WGALLOWEDIP_A_IPADDR:
        address = payload(a);
        address_size = payload_size(a);
        break;
      default:
        break;
    }
    return true;
  });
  if (!ok || !family || !cidr || address == nullptr) {
    return std::nullopt;
  }
  IpAddress ip;
  if (*family == AF_INET && address_size >= 4) {
    ip.family = AF_INET;
    std::memcpy(ip.bytes.data(), address, 4);
  } else if (*family == AF_INET6 && address_size >= 16) {
    ip.family = AF_INET6;
    std::memcpy(ip.bytes.data(), address, 16);
  } else {
    return std::nullopt;
  }
  return ip.str() + "/" + std::to_string(*cidr);
}

}  // namespace

std::string Endpoint::str() const {
  if (address.is_v6()) {
    return "[" + address.str() + "]:" + std::to_string(port);
  }
  return address.str() + ":" + std::to_string(port);
}

std::optional<Endpoint> parse_endpoint(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      return std::nullopt;  // no port, or an IPv6 address without brackets
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  std::optional<IpAddress> address = IpAddress::parse(host);
  std::optional<uint16_t> number = parse_port(port);
  if (!address || !number) {
    return std::nullopt;
  }
  if (text.front() == '[' && !address->is_v6()) {
    return std::nullopt;
  }
  return Endpoint{*address, *number};
}

std::string key_to_base64(const uint8_t* key, size_t size) {
  std::string out;
  for (size_t i = 0; i < size; i += 3) {
    uint32_t chunk = uint32_t(key[i]) << 16;
    if (i + 1 < size) chunk |= uint32_t(key[i + 1]) << 8;
    if (i + 2 < size) chunk |= key[i + 2];
    out += kBase64Alphabet[(chunk >> 18) & 63];
    out += kBase64Alphabet[(chunk >> 12) & 63];
    out += i + 1 < size ? kBase64Alphabet[(chunk >> 6) & 63] : '=';
    out += i + 2 < size ? kBase64Alphabet[chunk & 63] : '=';
  }
  return out;
}

std::optional<std::string> hex_key_to_base64(std::string_view hex) {
  if (hex.size() != 2 * WG_KEY_LEN) {
    return std::nullopt;
  }
  uint8_t key[WG_KEY_LEN];
  for (size_t i = 0; i < WG_KEY_LEN; ++i) {
    int high = hex_digit(hex[2 * i]);
    int low = hex_digit(hex[2 * i + 1]);
    if (high < 0 || low < 0) {
      return std::nullopt;
    }
    key[i] = static_cast<uint8_t>(high << 4 | low);
  }
  return key_to_base64(key, WG_KEY_LEN);
}

// ---- UAPI text ----------------------------------------------------------------------------------

std::optional<Device> parse_uapi_get(std::string_view text, const std::string& device_name,
                                     std::string* error) {
  auto fail = [&](const std::string& why) -> std::optional<Device> {
    if (error != nullptr) {
      *error = device_name + ": UAPI answer: " + why;
    }
    return std::nullopt;
  };
  Device device;
  device.name = device_name;
  device.implementation = "userspace";
  std::optional<int> errno_value;
  Peer* peer = nullptr;
  size_t line_no = 0;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++line_no;
    if (line.empty()) {
      break;  // the blank line that ends the answer
    }
    size_t equals = line.find('=');
    if (equals == std::string_view::npos) {
      return fail("line " + std::to_string(line_no) + " has no '=': '" + std::string(line) + "'");
    }
    std::string_view key = line.substr(0, equals);
    std::string_view value = line.substr(equals + 1);
    if (key == "public_key") {
      std::optional<std::string> base64 = hex_key_to_base64(value);
      if (!base64) {
        return fail("line " + std::to_string(line_no) + ": public_key is not 64 hex digits");
      }
      device.peers.push_back(Peer{*base64, std::nullopt, {}, 0});
      peer = &device.peers.back();
    } else if (key == "errno") {
      int number = 0;
      std::from_chars(value.data(), value.data() + value.size(), number);
      errno_value = number;
    } else if (peer == nullptr) {
      if (key == "listen_port") {
        device.listen_port = parse_port(value).value_or(0);
      } else if (key == "fwmark") {
        std::from_chars(value.data(), value.data() + value.size(), device.fwmark);
      }
    } else if (key == "endpoint") {
      peer->endpoint = parse_endpoint(value);
      if (!peer->endpoint) {
        return fail("line " + std::to_string(line_no) + ": endpoint '" + std::string(value) +
                    "' is not ip:port or [ipv6]:port");
      }
    } else if (key == "allowed_ip") {
      peer->allowed_ips.emplace_back(value);
    } else if (key == "last_handshake_time_sec") {
      std::from_chars(value.data(), value.data() + value.size(), peer->last_handshake_s);
    }
    // Other keys (private_key, tx_bytes, ...) are not uplinkd's business.
  }
  if (!errno_value) {
    return fail("no errno= line (the answer was cut short)");
  }
  if (*errno_value != 0) {
    return fail("errno=" + std::to_string(*errno_value) + " (" + std::strerror(*errno_value) + ")");
  }
  return device;
}

// ---- generic netlink ----------------------------------------------------------------------------

bool GenlDeviceParser::add_message(const nlmsghdr* message, std::string* error) {
  auto fail = [&](const std::string& why) {
    if (error != nullptr) {
      *error = "WireGuard netlink message: " + why;
    }
    return false;
  };
  const size_t header = NLMSG_HDRLEN + GENL_HDRLEN;
  if (message->nlmsg_len < header) {
    return fail("shorter than its headers");
  }
  const uint8_t* attributes = reinterpret_cast<const uint8_t*>(message) + header;
  const size_t size = message->nlmsg_len - header;
  bool peers_ok = true;
  std::string peer_error;
  bool ok = for_each_attribute(attributes, size, [&](const nlattr* a) {
    switch (attribute_type(a)) {
      case WGDEVICE_A_IFINDEX:
        device_.ifindex = static_cast<int>(read_scalar<uint32_t>(a).value_or(0));
        break;
      case WGDEVICE_A_IFNAME:
        device_.name.assign(reinterpret_cast<const char*>(payload(a)),
                            strnlen(reinterpret_cast<const char*>(payload(a)), payload_size(a)));
        break;
      case WGDEVICE_A_LISTEN_PORT:
        device_.listen_port = read_scalar<uint16_t>(a).value_or(0);
        break;
      case WGDEVICE_A_FWMARK:
        device_.fwmark = read_scalar<uint32_t>(a).value_or(0);
        break;
      case WGDEVICE_A_PEERS:
        peers_ok = for_each_attribute(payload(a), payload_size(a),
                                      [&](const nlattr* peer) { return add_peer(peer, &peer_error); });
        break;
      default:
        break;
    }
    return peers_ok;
  });
  device_.implementation = "kernel";
  if (!peer_error.empty()) {
    return fail(peer_error);
  }
  if (!ok) {
    return fail("an attribute overruns the message");
  }
  return true;
}

bool GenlDeviceParser::add_peer(const nlattr* peer_attribute, std::string* error) {
  Peer peer;
  std::vector<std::string> allowed;
  bool ok = for_each_attribute(payload(peer_attribute), payload_size(peer_attribute), [&](const nlattr* a) {
    switch (attribute_type(a)) {
      case WGPEER_A_PUBLIC_KEY:
        if (payload_size(a) != WG_KEY_LEN) {
          *error = "peer public key of " + std::to_string(payload_size(a)) + " bytes (expected 32)";
          return false;
        }
        peer.public_key = key_to_base64(payload(a), WG_KEY_LEN);
        break;
      case WGPEER_A_ENDPOINT:
        peer.endpoint = endpoint_from_sockaddr(payload(a), payload_size(a));
        break;
      case WGPEER_A_LAST_HANDSHAKE_TIME:
        peer.last_handshake_s = read_scalar<int64_t>(a).value_or(0);
        break;
      case WGPEER_A_ALLOWEDIPS:
        return for_each_attribute(payload(a), payload_size(a), [&](const nlattr* entry) {
          if (std::optional<std::string> text = allowed_ip(entry)) {
            allowed.push_back(*text);
          }
          return true;
        });
      default:
        break;
    }
    return true;
  });
  if (!ok) {
    if (error->empty()) {
      *error = "a peer attribute overruns its nest";
    }
    return false;
  }
  if (peer.public_key.empty()) {
    *error = "a peer without a public key";
    return false;
  }
  // The kernel continues a peer whose allowed IPs did not fit in the next message, repeating its key.
  if (!device_.peers.empty() && device_.peers.back().public_key == peer.public_key) {
    Peer& previous = device_.peers.back();
    previous.allowed_ips.insert(previous.allowed_ips.end(), allowed.begin(), allowed.end());
    if (peer.endpoint) previous.endpoint = peer.endpoint;
    if (peer.last_handshake_s != 0) previous.last_handshake_s = peer.last_handshake_s;
    return true;
  }
  peer.allowed_ips = std::move(allowed);
  device_.peers.push_back(std::move(peer));
  return true;
}

}  // namespace uplinkd::wireguard
