#include "wireguard/watcher.h"

#include <algorithm>
#include <set>
#include <tuple>

namespace uplinkd::wireguard {
namespace {

bool peer_order(const PeerState& a, const PeerState& b) {
  return std::tie(a.device, a.public_key) < std::tie(b.device, b.public_key);
}

std::vector<PeerState> flatten(const std::vector<Device>& devices) {
  std::vector<PeerState> peers;
  for (const Device& device : devices) {
    for (const Peer& peer : device.peers) {
      peers.push_back(PeerState{device.name, peer.public_key, peer.endpoint, device.fwmark, device.ifindex,
                                device.implementation});
    }
  }
  std::sort(peers.begin(), peers.end(), peer_order);
  return peers;
}

std::set<std::string> device_names(const std::vector<Device>& devices) {
  std::set<std::string> names;
  for (const Device& device : devices) names.insert(device.name);
  return names;
}

}  // namespace

WatchChanges WireguardWatcher::poll() {
  Discovery found = discover_devices(uapi_dir_);
  std::vector<PeerState> now = flatten(found.devices);
  WatchChanges changes;

  // Both lists are sorted by (device, key): one merge walk finds additions, removals and moves.
  auto old_it = peers_.begin();
  auto new_it = now.begin();
  while (old_it != peers_.end() || new_it != now.end()) {
    if (new_it == now.end() || (old_it != peers_.end() && peer_order(*old_it, *new_it))) {
      changes.removed.push_back(*old_it++);
    } else if (old_it == peers_.end() || peer_order(*new_it, *old_it)) {
      changes.added.push_back(*new_it++);
    } else {
      if (old_it->endpoint != new_it->endpoint) {
        changes.moved.push_back({*old_it, *new_it});
      }
      ++old_it;
      ++new_it;
    }
  }
  std::set<std::string> before = device_names(devices_);
  std::set<std::string> after = device_names(found.devices);
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                      std::back_inserter(changes.devices_added));
  std::set_difference(before.begin(), before.end(), after.begin(), after.end(),
                      std::back_inserter(changes.devices_removed));

  devices_ = std::move(found.devices);
  peers_ = std::move(now);
  problems_ = std::move(found.problems);
  return changes;
}

}  // namespace uplinkd::wireguard
