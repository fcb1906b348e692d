// The addresses of the metrics listener (`option metrics_listen`, an extension in globals): each
// `address:port` with a literal address, IPv6 in brackets (`127.0.0.1:9107`, `[::1]:9107`). No host
// names and no default address: the listener binds exactly where it is told, or not at all.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <optional>
#include <string>

namespace uplinkd::observability {

struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = 0;
  std::string text;  // as configured, normalised ("[::1]:9107")
};

// The address, or nullopt and `*problem` says what is wrong for a config error.
std::optional<ListenAddress> parse_listen_address(const std::string& text, std::string* problem);

}  // namespace uplinkd::observability
