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
    append_list(out, peer, "problems", "problem");
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
