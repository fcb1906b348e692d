// `uplinkctl wireguard` as text: one line per peer, then its routes and problems indented below.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "config/config.h"

namespace uplinkd::wireguard {

// Why a WireGuard device's fwmark defeats uplinkd's steering, or "" when it does not. WireGuard
// routes its outer packets with its fwmark; bits under mmx_mask that equal an enabled uplink's mark
// make mwan3's `fwmark M/mask lookup N` rule pin the tunnel to that uplink (and its `unreachable`
// rule drop it while that uplink is down); the blackhole and unreachable marks drop it always.
// Other values (no mark bits, mwan3's default mark, an id no interface has) are routed as usual.
std::string fwmark_problem(const std::string& device, uint32_t fwmark, const config::Config& cfg);

// From the daemon's answer to {"command": "wireguard"} (WireguardManager::json()).
std::string format_wireguard(const nlohmann::json& answer);

}  // namespace uplinkd::wireguard
