// The UAPI text of userspace WireGuard (wireguard-go's answer to `get=1`), as discovery.cpp reads it
// from /var/run/wireguard/<device>.sock: wireguard::parse_uapi_get. A refusal with a reason is
// fine; a crash, a sanitizer report or a refusal without a reason is not.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "wireguard/peer_parse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace uplinkd::wireguard;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  const std::optional<Device> device = parse_uapi_get(text, "wg0", &error);
  if (!device) {
    if (error.empty()) std::abort();
    return 0;
  }
  for (const Peer& peer : device->peers) {
    if (peer.endpoint) (void)peer.endpoint->str();  // what `uplinkctl wireguard` prints
  }
  return 0;
}
