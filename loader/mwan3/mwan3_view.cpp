#include "mwan3/mwan3_view.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>

#include "control/request.h"
#include "control/status_text.h"
#include "policy/policy_table.h"

namespace uplinkd::mwan3 {
namespace {

using json = nlohmann::json;

// ubus integers are 32-bit signed (blobmsg int32): larger counts are clamped, not wrapped negative.
int64_t ubus_int(const json& value) {
  if (value.is_number_unsigned())
    return static_cast<int64_t>(std::min<uint64_t>(value.get<uint64_t>(), INT32_MAX));
  if (value.is_number()) return std::clamp<int64_t>(static_cast<int64_t>(value.get<double>()), 0, INT32_MAX);
  return 0;
}

int64_t field(const json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? 0 : ubus_int(*it);
}

json track_ips(const json& interface) {
  json out = json::array();
  for (const auto& t : interface.value("targets", json::array())) {
    // mwan3track writes latency and loss as whole numbers (ms, percent).
    out.push_back({{"ip", t.value("ip", "")},
                   {"status", t.value("state", "unknown")},
                   {"latency", ubus_int(json(t.value("rtt_ms", 0.0) + 0.5))},
                   {"packetloss", ubus_int(json(t.value("loss_pct", 0.0) + 0.5))}});
  }
  return out;
}

json interfaces_json(const json& status, const std::string& only) {
  json out = json::object();
  for (const auto& i : status.value("interfaces", json::array())) {
    const std::string name = i.value("name", "");
    if (!only.empty() && name != only) continue;
    out[name] = ubus_interface(i);
  }
  return out;
}

// {"ipv4": {"<policy>": [{"interface": "wan", "percent": 50}]}, "ipv6": {...}}: no last_resort entry,
// since mwan3's plugin lists only the members with a weight.
json policies_json(const json& status) {
  json out = {{"ipv4", json::object()}, {"ipv6", json::object()}};
  const json policies = status.value("policies", json::object());
  for (const char* family : {"ipv4", "ipv6"}) {
    const json chains = policies.value(family, json::object());  // items() must not outlive it
    for (const auto& [name, members] : chains.items()) {
      json list = json::array();
      for (const auto& m : members) {
        list.push_back(
            {{"interface", m.value("interface", "")}, {"percent", ubus_int(m.value("percent", json(0)))}});
      }
      out[family][name] = std::move(list);
    }
  }
  return out;
}

json connected_json(const json& status) {
  const json connected = status.value("connected", json::object());
  return {{"ipv4", connected.value("ipv4", json::array())}, {"ipv6", connected.value("ipv6", json::array())}};
}

// ---- rules ---------------------------------------------------------------------------------------

bool rule_has_family(const json& rule, const std::string& family) {
  const std::string f = rule.value("family", "any");
  return f == "any" || f == family;
}

std::vector<std::string> strings(const json& rule, const char* key) {
  std::vector<std::string> out;
  const auto it = rule.find(key);
  if (it == rule.end() || !it->is_array()) return out;
  for (const auto& v : *it) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

// Addresses of `family` in a rule's list, or the family's "any" when the list has none.
std::vector<std::string> addresses(const json& rule, const char* key, const std::string& family) {
  std::vector<std::string> out;
  for (const auto& a : strings(rule, key)) {
    if ((a.find(':') != std::string::npos) == (family == "ipv6")) out.push_back(a);
  }
  if (out.empty() && strings(rule, key).empty()) out.push_back(family == "ipv6" ? "::/0" : "0.0.0.0/0");
  return out;
}

std::string joined(const std::vector<std::string>& parts, const char* separator) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : separator) + p;
  return out;
}

// What iptables prints after the addresses, up to the mark match mwan3's sed cuts off.
std::string matches(const json& rule) {
  std::string out;
  const auto sports = strings(rule, "src_port");
  const auto dports = strings(rule, "dest_port");
  if (!sports.empty() || !dports.empty()) {
    out += "multiport";
    if (!sports.empty()) out += " sports " + joined(sports, ",");
    if (!dports.empty()) out += " dports " + joined(dports, ",");
    out += " ";
  }
  if (rule.contains("ipset") && rule["ipset"].is_string()) {
    out += "match-set " + rule["ipset"].get<std::string>() + " dst ";
  }
  return out;
}

// mwan3 jumps to mwan3_policy_<p> (shown "- <p>"), to mwan3_rule_<r> for sticky rules ("S <r>"), and
// sets the mark itself for the default, unreachable and blackhole policies (MARK).
std::string target(const json& rule) {
  const std::string policy = rule.value("use_policy", "?");
  if (policy == "default" || policy == "unreachable" || policy == "blackhole") return "MARK";
  if (rule.value("sticky", false)) return "S " + rule.value("name", "?");
  return "- " + policy;
}

std::string rule_line(const json& rule, const std::string& src, const std::string& dst) {
  const std::string in = rule.contains("src_iface") && rule["src_iface"].is_string()
                             ? rule["src_iface"].get<std::string>()
                             : "*";
  char buf[512];
  std::snprintf(buf, sizeof buf, "%5s %5s %-9s %-5s -- %-6s %-6s %-19s %-19s %s",
                counter_column(rule.value("packets", uint64_t{0})).c_str(),
                counter_column(rule.value("bytes", uint64_t{0})).c_str(), target(rule).c_str(),
                rule.value("proto", "all").c_str(), in.c_str(), "*", src.c_str(), dst.c_str(),
                matches(rule).c_str());
  return buf;
}

std::string family_rules(const json& rules, const std::string& family) {
  std::string out;
  for (const auto& rule : rules) {
    if (!rule_has_family(rule, family)) continue;
    // iptables expands address lists into one rule per source and destination.
    for (const auto& src : addresses(rule, "src_ip", family)) {
      for (const auto& dst : addresses(rule, "dest_ip", family)) out += rule_line(rule, src, dst) + "\n";
    }
  }
  return out;
}

}  // namespace

std::string rpcd_list() { return R"({"status":{"section":"str","interface":"str"}})"; }

std::string parse_ubus_args(std::string_view text, UbusArgs* args) {
  *args = {};
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) return {};
  json parsed;
  try {
    parsed = json::parse(text);
  } catch (const json::exception& e) {
    return "malformed JSON arguments: " + control::parse_detail(e);
  }
  if (!parsed.is_object()) return std::string("arguments must be a JSON object, got ") + parsed.type_name();
  for (const auto& [key, value] : parsed.items()) {
    if (key != "section" && key != "interface") {
      return "unknown argument '" + control::printable(key, 64) + "' (known: section, interface)";
    }
    if (!value.is_string()) return "argument '" + key + "' must be a string, got " + value.type_name();
    (key == "section" ? args->section : args->interface) = value.get<std::string>();
  }
  return {};
}

json ubus_interface(const json& interface) {
  const json m = interface.value("mwan3", json::object());
  return {{"age", field(m, "age")},
          {"online", field(m, "online")},
          {"offline", field(m, "offline")},
          {"uptime", field(m, "uptime")},
          {"score", field(interface, "score")},
          {"lost", field(m, "lost")},
          {"turn", field(m, "turn")},
          {"status", m.value("status", "unknown")},
          {"enabled", interface.value("enabled", false)},
          {"running", m.value("running", false)},
          {"tracking", m.value("tracking", "disabled")},
          {"up", m.value("up", false)},
          {"track_ip", track_ips(interface)}};
}

json ubus_status(const json& status, const UbusArgs& args) {
  if (args.section == "interfaces") return {{"interfaces", interfaces_json(status, args.interface)}};
  if (args.section == "connected") return {{"connected", connected_json(status)}};
  if (args.section == "policies") return {{"policies", policies_json(status)}};
  return {{"interfaces", interfaces_json(status, "")},
          {"connected", connected_json(status)},
          {"policies", policies_json(status)}};
}

std::string counter_column(uint64_t value) {
  // iptables' xtables_print_num: up to 5 digits as they are, then rounded thousands per unit.
  static constexpr std::array<char, 4> kUnits = {'K', 'M', 'G', 'T'};
  if (value <= 99999) return std::to_string(value);
  size_t unit = 0;
  value = (value + 500) / 1000;
  while (value > 9999 && unit + 1 < kUnits.size()) {
    value = (value + 500) / 1000;
    ++unit;
  }
  return std::to_string(value) + kUnits[unit];
}

std::string format_rules(const json& rules) {
  return "Active ipv4 user rules:\n" + family_rules(rules, "ipv4") + "\nActive ipv6 user rules:\n" +
         family_rules(rules, "ipv6") + "\n";
}

std::string format_interfaces(const json& status) {
  std::string out = "Interface status:\n";
  for (const auto& i : status.value("interfaces", json::array())) {
    const json m = i.value("mwan3", json::object());
    const std::string state = m.value("status", "unknown");
    out += " interface " + i.value("name", "?") + " is " + state + " and tracking is " +
           m.value("tracking", "disabled");
    if (state == "online") {
      out += " (" + m.value("hotplug_state", "online") + " " + control::format_duration(field(m, "online")) +
             ", uptime " + control::format_duration(field(m, "uptime")) + ")";
    }
    out += "\n";
  }
  return out + "\n";
}

std::string format_status(const json& status) {
  return format_interfaces(status) + policy::format_policies(status.value("policies", json::object())) +
         control::format_connected(status.value("connected", json::object())) +
         format_rules(status.value("rules", json::array()));
}

std::string help_text() {
  static constexpr std::array<std::pair<const char*, const char*>, 12> kVerbs = {{
      {"start", "Enable and start uplinkd (the service)"},
      {"stop", "Stop uplinkd and disable the service"},
      {"restart", "Restart uplinkd in place (no outage)"},
      {"ifup <iface>", "Load rules and routes for specific interface"},
      {"ifdown <iface>", "Unload rules and routes for specific interface"},
      {"interfaces", "Show interfaces status"},
      {"policies", "Show currently active policy"},
      {"connected", "Show directly connected networks"},
      {"rules", "Show active rules"},
      {"status", "Show all status"},
      {"internal <ipv4|ipv6>", "Show internal configuration <default: ipv4>"},
      {"use <iface> <cmd>", "Run a command bound to <iface> and avoid mwan3 rules"},
  }};
  std::string out = "Syntax: mwan3 [command]\n\nAvailable commands:\n";
  char line[128];
  for (const auto& [verb, what] : kVerbs) {
    std::snprintf(line, sizeof line, "%-25s%s\n", verb, what);
    out += line;
  }
  return out;
}

}  // namespace uplinkd::mwan3
