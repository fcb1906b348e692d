#include "observability/listen_address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace uplinkd::observability {

namespace {

std::optional<uint16_t> parse_port(const std::string& text) {
  unsigned value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || value == 0 || value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

}  // namespace

std::optional<ListenAddress> parse_listen_address(const std::string& text, std::string* problem) {
  std::string host;
  std::string port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      *problem = "is not [IPv6 address]:port";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      *problem = text.find(':') != colon ? "is an IPv6 address without brackets ([address]:port)"
                                         : "has no port (address:port)";
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  const std::optional<uint16_t> port = parse_port(port_text);
  if (!port) {
    *problem = "has no port from 1 to 65535";
    return std::nullopt;
  }
  ListenAddress out;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1 && text.front() != '[') {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(*port);
    out.len = sizeof(sockaddr_in);
    out.family = AF_INET;
    out.text = host + ":" + port_text;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1 && text.front() == '[') {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(*port);
    out.len = sizeof(sockaddr_in6);
    out.family = AF_INET6;
    out.text = "[" + host + "]:" + port_text;
  } else {
    *problem = "does not start with a literal IPv4 address or a bracketed IPv6 address";
    return std::nullopt;
  }
  return out;
}

}  // namespace uplinkd::observability
