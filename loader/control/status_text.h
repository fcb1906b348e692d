// Renders the daemon's status JSON as mwan3-style text (../shared/reference/mwan3-behaviour.md §6).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace uplinkd::control {

// " interface wan is online and tracking is active (online 00h:12m:34s, uptime 01h:02m:03s)" lines.
std::string format_interfaces(const nlohmann::json& status);
// `uplinkctl status`: the interface section, then each interface's probe targets.
std::string format_status(const nlohmann::json& status);
// 00h:12m:34s
std::string format_duration(double seconds);

}  // namespace uplinkd::control
