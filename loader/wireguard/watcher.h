// Follows the WireGuard devices of this namespace: each poll() reads them all again (a few netlink
// and socket round trips, cheap every few seconds) and says what changed since the previous poll:
// peers that appeared or went, and endpoints that moved (a DDNS name resolving elsewhere, a roaming
// peer). Devices that appear and vanish are handled; nothing here throws.
#pragma once

#include <string>
#include <vector>

#include "wireguard/discovery.h"

namespace uplinkd::wireguard {

// One peer as the watcher tracks it.
struct PeerState {
  std::string device;
  std::string public_key;
  std::optional<Endpoint> endpoint;  // nullopt: none yet
  uint32_t fwmark = 0;               // the device's
  int device_ifindex = 0;
  std::string implementation;  // "kernel" or "userspace"
  bool operator==(const PeerState&) const = default;
};

struct EndpointMove {
  PeerState before;
  PeerState now;
};

struct WatchChanges {
  std::vector<PeerState> added;
  std::vector<PeerState> removed;  // its device vanished, or the peer was removed
  std::vector<EndpointMove> moved;
  std::vector<std::string> devices_added;
  std::vector<std::string> devices_removed;
  [[nodiscard]] bool empty() const {
    return added.empty() && removed.empty() && moved.empty() && devices_added.empty() &&
           devices_removed.empty();
  }
};

class WireguardWatcher {
 public:
  explicit WireguardWatcher(std::string uapi_dir = kDefaultUapiDir) : uapi_dir_(std::move(uapi_dir)) {}

  WatchChanges poll();
  // What the latest poll saw, sorted by device then key.
  [[nodiscard]] const std::vector<PeerState>& peers() const { return peers_; }
  [[nodiscard]] const std::vector<Device>& devices() const { return devices_; }
  // The latest poll's problems (permission, malformed answers), for the log and the CLI.
  [[nodiscard]] const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::string uapi_dir_;
  std::vector<Device> devices_;
  std::vector<PeerState> peers_;
  std::vector<std::string> problems_;
};

}  // namespace uplinkd::wireguard
