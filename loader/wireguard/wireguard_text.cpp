#include "wireguard/wireguard_text.h"

#include <cstdio>
#include <stdexcept>

#include "policy/policy_table.h"

namespace uplinkd::wireguard {
namespace {

std::string text_of(const nlohmann::json& object, const char* key, const std::string& fallback) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string() || it->get<std::string>().empty()) return fallback;
  return it->get<std::string>();
}

void append_list(std::string& out, const nlohmann::json& peer, const char* key, const char* label) {
  auto it = peer.find(key);
  if (it == peer.end() || !it->is_array()) return;
  for (const auto& item : *it) out += "   " + std::string(label) + ": " + item.get<std::string>() + "\n";
}

std::string peer_line(const nlohmann::json& peer) {
  std::string who = text_of(peer, "peer", "");
  who = who.empty() ? "static endpoint" : "peer " + who;
  std::string uplink = text_of(peer, "uplink", "none");
  if (uplink != "none") uplink += " (" + text_of(peer, "uplink_device", "?") + ")";
  std::string policy = text_of(peer, "policy", "none");
  return " " + text_of(peer, "device", "?") + " " + who + " endpoint " + text_of(peer, "endpoint", "none") +
         " policy " + policy + " (" + text_of(peer, "policy_from", "?") + ") uplink " + uplink + ", " +
         std::to_string(peer.value("steered_packets", uint64_t{0})) + " packets steered\n";
}

// "   MTU 1420 + 60 outer: wan 1500, wanb 1400 (path MTUs); largest that fits 1340"
std::string mtu_line(const nlohmann::json& peer) {
  auto it = peer.find("mtu");
  if (it == peer.end() || !it->is_object()) return "";
  const nlohmann::json& mtu = *it;
  std::string uplinks;
  const nlohmann::json paths = mtu.value("uplinks", nlohmann::json::object());
  for (const auto& [name, path] : paths.items()) {
    uplinks += (uplinks.empty() ? "" : ", ") + name + " " +
               (path.is_number() ? std::to_string(path.get<int>()) : "?");
  }
  std::string out = "   MTU " + std::to_string(mtu.value("device_mtu", 0)) + " + " +
                    std::to_string(mtu.value("outer_overhead", 0)) +
                    " outer; path MTUs of its policy's uplinks: " + (uplinks.empty() ? "none" : uplinks);
  const auto largest = mtu.find("largest_fitting_mtu");
  if (largest != mtu.end() && largest->is_number())
    out += "; largest MTU that fits " + std::to_string(largest->get<int>());
  return out + "\n";
}

}  // namespace

std::string format_wireguard(const nlohmann::json& answer) {
  std::string out = "WireGuard peers:\n";
  const nlohmann::json peers = answer.value("peers", nlohmann::json::array());
  if (peers.empty()) out += " (none found)\n";
  for (const auto& peer : peers) {
    out += peer_line(peer);
    append_list(out, peer, "stale_routes", "stale route");
    append_list(out, peer, "fixed_routes", "fixed route");
    std::string guard = text_of(peer, "guard_route", "");
    if (!guard.empty()) out += "   full-tunnel guard route: " + guard + "\n";
    out += mtu_line(peer);
    append_list(out, peer, "problems", "problem");
  }
  const nlohmann::json clamps = answer.value("mss_clamp", nlohmann::json::object());
  for (const auto& [device, clamp] : clamps.items()) {
    if (!clamp.value("error", std::string()).empty()) continue;  // said under Problems
    out += " " + device + ": TCP MSS clamped to " + std::to_string(clamp.value("mss4", 0)) + " (IPv4), " +
           std::to_string(clamp.value("mss6", 0)) + " (IPv6) for uplink " +
           clamp.value("uplink", std::string("?")) + "\n";
  }
  const nlohmann::json problems = answer.value("problems", nlohmann::json::array());
  if (!problems.empty()) {
    out += "Problems:\n";
    for (const auto& p : problems) out += " " + p.get<std::string>() + "\n";
  }
  return out;
}

std::string fwmark_problem(const std::string& device, uint32_t fwmark, const config::Config& cfg) {
  policy::MarkSpace marks;
  try {
    marks = policy::MarkSpace::from_mask(cfg.globals.mmx_mask);
  } catch (const std::invalid_argument&) {
    return "";  // config validation refuses such a mask first
  }
  const uint32_t under_mask = fwmark & marks.mask;
  if (under_mask == 0 || under_mask == marks.default_mark) return "";
  auto hex = [](uint32_t v) {
    char text[16];
    std::snprintf(text, sizeof text, "0x%x", v);
    return std::string(text);
  };
  const std::string head = "device " + device + " has fwmark " + hex(fwmark) +
                           ", whose bits under mmx_mask " + hex(marks.mask) + " are ";
  const std::string fix = "; give it a fwmark without bits in mmx_mask (wg set " + device + " fwmark ...)";
  if (under_mask == marks.blackhole_mark || under_mask == marks.unreachable_mark) {
    return head + "mwan3's " + (under_mask == marks.blackhole_mark ? "blackhole" : "unreachable") +
           " mark: its tunnel packets are dropped by that ip rule" + fix;
  }
  for (const auto& i : cfg.interfaces) {
    if (!i.enabled || marks.interface_mark(i.id) != under_mask) continue;
    return head + "interface " + i.name + "'s mark: its tunnel packets are routed by " + i.name +
           "'s table only and are unreachable while " + i.name + " is down (uplinkd cannot move them)" + fix;
  }
  return "";
}

}  // namespace uplinkd::wireguard
