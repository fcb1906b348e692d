// Renders the daemon's status JSON as mwan3-style text (../shared/reference/mwan3-behaviour.md §6).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace uplinkd::control {

// " interface wan is online and tracking is active (online 00h:12m:34s, uptime 01h:02m:03s)" lines.
std::string format_interfaces(const nlohmann::json& status);
// `uplinkctl status`: interfaces, policies, connected networks and rules (mwan3's order), then each
// interface's probe targets.
std::string format_status(const nlohmann::json& status);
// "Directly connected ipv4 networks:" then one prefix a line, and the same for ipv6.
std::string format_connected(const nlohmann::json& connected);
// 00h:12m:34s
std::string format_duration(double seconds);

}  // namespace uplinkd::control
