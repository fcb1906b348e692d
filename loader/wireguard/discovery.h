// Reading WireGuard devices from the running system: kernel WireGuard over generic netlink (links of
// kind "wireguard", one WG_CMD_GET_DEVICE dump each) and userspace implementations (wireguard-go,
// boringtun) over their UAPI socket <dir>/<device>.sock. Neither throws: a device that vanishes
// between listing and asking is simply not returned; other problems come back as sentences.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "wireguard/peer_parse.h"

namespace uplinkd::wireguard {

// Where userspace implementations put their UAPI sockets.
inline constexpr const char* kDefaultUapiDir = "/var/run/wireguard";

struct Discovery {
  std::vector<Device> devices;
  std::vector<std::string> problems;  // e.g. "wg0: ... (errno 13): run as root"
};

// Names of this network namespace's links of kind "wireguard".
std::vector<std::string> kernel_wireguard_links(std::string* error);

// One kernel device's configuration; nullopt with `error` empty when the device is gone.
std::optional<Device> query_kernel_device(const std::string& name, std::string* error);

// One userspace device through <uapi_dir>/<name>.sock; nullopt with `error` empty when no process
// answers there any more (a socket left by a stopped wireguard-go).
std::optional<Device> query_userspace_device(const std::string& uapi_dir, const std::string& name,
                                             std::string* error);

// Every device of both kinds. A userspace socket counts only when a link of its name exists in
// this network namespace: the socket directory is shared by all namespaces of the host.
Discovery discover_devices(const std::string& uapi_dir);

}  // namespace uplinkd::wireguard
