// `uplinkctl wireguard` as text: one line per peer, then its routes and problems indented below.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace uplinkd::wireguard {

// From the daemon's answer to {"command": "wireguard"} (WireguardManager::json()).
std::string format_wireguard(const nlohmann::json& answer);

}  // namespace uplinkd::wireguard
