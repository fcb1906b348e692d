// uplinkd's status seen through mwan3's interfaces: the JSON of mwan3's rpcd plugin (ubus `mwan3
// status`), the text of `mwan3 rules` and `mwan3 status`, and the arguments rpcd hands the plugin.
// Pure functions of the daemon's status JSON (`uplinkctl status --json`), so that ubus, the `mwan3`
// command and uplinkctl all show the same numbers. Shapes: ../shared/reference/openwrt-integration.md.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace uplinkd::mwan3 {

// The arguments of ubus `mwan3 status`.
struct UbusArgs {
  std::string section;    // "interfaces", "connected", "policies"; anything else (or none): all three
  std::string interface;  // with section "interfaces": only this interface; empty: all of them
};

// `<plugin> list`: the methods and their argument types, as rpcd's exec plugins declare them.
std::string rpcd_list();

// What rpcd writes on the plugin's stdin for `call status`: empty (no arguments) or one JSON object
// whose members are `section` and `interface`, strings. Returns "" and fills `*args`, or the error
// for stderr: malformed JSON, another type, an unknown member (named), or a member not a string.
std::string parse_ubus_args(std::string_view text, UbusArgs* args);

// The answer to `call status`, from the daemon's status JSON: mwan3's plugin's keys and types
// exactly ({"interfaces":{...}}, {"connected":{...}}, {"policies":{...}}, or all three). An
// `interface` that is not configured gives an empty "interfaces" object, as mwan3's plugin does.
nlohmann::json ubus_status(const nlohmann::json& status, const UbusArgs& args);

// One interface of the answer: age, online, offline, uptime, score, lost, turn, status, enabled,
// running, tracking, up, track_ip.
nlohmann::json ubus_interface(const nlohmann::json& interface);

// `mwan3 rules`: "Active ipv4 user rules:" then one line per rule in iptables' `-L -n -v` columns as
// mwan3 prints its mwan3_rules chain (packets, bytes, "- <policy>" or "S <rule>" for sticky rules,
// proto, "--", in, out, source, destination, match), a blank line, and the same for ipv6.
std::string format_rules(const nlohmann::json& rules);

// `mwan3 interfaces`: "Interface status:", then per interface mwan3's line
// " interface wan is online and tracking is active (online 00h:12m:34s, uptime 01h:02m:03s)" (the
// parenthesis only while online), and a blank line.
std::string format_interfaces(const nlohmann::json& status);

// `mwan3 status`: interfaces, policies, connected networks and rules, in mwan3's order and shapes.
std::string format_status(const nlohmann::json& status);

// `mwan3` with no or an unknown verb: mwan3's help, with its verbs and layout.
std::string help_text();

// iptables' counter column: the number, or with a K/M/G/T suffix once it needs more than 5 digits.
std::string counter_column(uint64_t value);

}  // namespace uplinkd::mwan3
