#include "daemon/policy_runtime.h"

#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "common/log.h"

namespace uplinkd {
namespace {

struct LinkInfo {
  int ifindex = 0;
  std::string name;
  bool up = false;
  bool ethernet = true;
  bool loopback = false;
};

std::vector<LinkInfo> list_links() {
  std::vector<LinkInfo> out;
  struct if_nameindex* names = if_nameindex();
  if (names == nullptr) return out;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  for (auto* n = names; n->if_index != 0 && n->if_name != nullptr; ++n) {
    LinkInfo l;
    l.ifindex = static_cast<int>(n->if_index);
    l.name = n->if_name;
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, n->if_name, IFNAMSIZ - 1);
    if (fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
      l.up = (ifr.ifr_flags & IFF_UP) != 0;
      l.loopback = (ifr.ifr_flags & IFF_LOOPBACK) != 0;
    }
    if (fd >= 0 && ioctl(fd, SIOCGIFHWADDR, &ifr) == 0) l.ethernet = ifr.ifr_hwaddr.sa_family == ARPHRD_ETHER;
    out.push_back(l);
  }
  if (fd >= 0) close(fd);
  if_freenameindex(names);
  return out;
}

// The classifier's tries hold IPv4 as IPv4-mapped IPv6 (see struct lpm_key).
lpm_key to_lpm(const netlink::RoutePrefix& p) {
  lpm_key k{};
  if (p.address.is_v4()) {
    k.prefixlen = static_cast<uint32_t>(p.prefixlen) + 96;
    k.addr[10] = 0xff;
    k.addr[11] = 0xff;
    std::memcpy(&k.addr[12], p.address.bytes.data(), 4);
  } else {
    k.prefixlen = static_cast<uint32_t>(p.prefixlen);
    std::memcpy(k.addr, p.address.bytes.data(), 16);
  }
  return k;
}

policy_entry fallback_entry(uint32_t mark) {
  policy_entry e{};
  e.n_members = 0;
  e.fallback_mark = mark;
  return e;
}

}  // namespace

PolicyRuntime::PolicyRuntime(const config::Config& cfg, datapath::Datapath& dp)
    : cfg_(cfg), dp_(dp), marks_(policy::MarkSpace::from_mask(cfg.globals.mmx_mask)) {
  policy::check_policy_limits(cfg_);
  policy_ids_ = policy::assign_policy_ids(cfg_);
  rules_ = policy::compile_rules(cfg_, policy_ids_, [](const std::string& dev) { return if_nametoindex(dev.c_str()); });
  for (size_t i = 0; i < rules_.info.size(); ++i) {
    for (const auto& w : rules_.info[i].warnings) log::warn("rule " + rules_.info[i].name + ": " + w);
    if (!rules_.info[i].set.empty()) {
      log::warn("rule " + rules_.info[i].name + ": ipset '" + rules_.info[i].set +
                "' is not loaded yet by uplinkd; the rule matches no destination until it is");
    }
  }
  for (const auto& i : cfg_.interfaces) {
    if (!i.device.empty()) uplink_devices_.insert(i.device);
  }
  for (int family : {AF_INET, AF_INET6}) {
    std::string error;
    if (kernel_.install_general(family, cfg_.globals.mmx_mask, &error) != 0) throw std::runtime_error(error);
  }
  for (const auto& i : cfg_.interfaces) {
    if (!i.enabled) continue;
    const int family = i.family == config::Family::Ipv6 ? AF_INET6 : AF_INET;
    std::string error;
    if (kernel_.install_uplink(i.id, i.device, family, config::mark_for_id(i.id, cfg_.globals.mmx_mask),
                               cfg_.globals.mmx_mask, &error) != 0) {
      throw std::runtime_error("interface " + i.name + ": " + error);
    }
  }
  classifier_cfg c{};
  c.mmx_mask = cfg_.globals.mmx_mask;
  c.n_rules = static_cast<uint32_t>(rules_.entries.size());
  c.default_mark = marks_.default_mark;
  // Flows stay on their decision until the LRU evicts them or their uplink goes down, like a
  // conntrack mark; idle expiry comes with the failover-hygiene work.
  c.flow_timeout_s = 0;
  write_rules();
  dp_.write_classifier_cfg(c);
  publish({});
}

PolicyRuntime::~PolicyRuntime() {
  for (const auto& l : list_links()) dp_.detach_lan(l.ifindex);
}

void PolicyRuntime::write_rules() {
  for (size_t i = 0; i < rules_.entries.size(); ++i) dp_.write_rule(static_cast<uint32_t>(i), rules_.entries[i]);
}

void PolicyRuntime::publish(const policy::OnlineInterfaces& online) {
  table_ = policy::resolve_policies(cfg_, online);
  // The built-in targets of use_policy first: they never change, but a restart must find them.
  dp_.write_policy(UPLINKD_POLICY_SLOT(policy::kPolicyIdDefault, 4), fallback_entry(marks_.default_mark));
  dp_.write_policy(UPLINKD_POLICY_SLOT(policy::kPolicyIdDefault, 6), fallback_entry(marks_.default_mark));
  dp_.write_policy(UPLINKD_POLICY_SLOT(policy::kPolicyIdUnreachable, 4), fallback_entry(marks_.unreachable_mark));
  dp_.write_policy(UPLINKD_POLICY_SLOT(policy::kPolicyIdUnreachable, 6), fallback_entry(marks_.unreachable_mark));
  dp_.write_policy(UPLINKD_POLICY_SLOT(policy::kPolicyIdBlackhole, 4), fallback_entry(marks_.blackhole_mark));
  dp_.write_policy(UPLINKD_POLICY_SLOT(policy::kPolicyIdBlackhole, 6), fallback_entry(marks_.blackhole_mark));
  for (const auto& p : table_.policies) {
    auto it = policy_ids_.find(p.name);
    if (it == policy_ids_.end()) continue;
    dp_.write_policy(UPLINKD_POLICY_SLOT(it->second, 4), policy::to_policy_entry(p.ipv4));
    dp_.write_policy(UPLINKD_POLICY_SLOT(it->second, 6), policy::to_policy_entry(p.ipv6));
  }
}

void PolicyRuntime::refresh(const std::vector<UplinkView>& uplinks) {
  refresh_lan(uplinks);
  refresh_connected();
  std::vector<int> up;
  for (const auto& u : uplinks) {
    if (u.ifindex != 0) up.push_back(u.ifindex);
  }
  for (const auto& u : uplinks) {
    if (u.ifindex == 0) continue;
    std::vector<int> others;
    for (int ifindex : up) {
      if (ifindex != u.ifindex) others.push_back(ifindex);
    }
    std::string error;
    if (kernel_.sync_table(u.id, u.ifindex, u.family, others, &error) != 0 && error != last_error_) {
      log::warn("table " + std::to_string(u.id) + " (" + u.device + "): " + error);
      last_error_ = error;
    }
  }
  if (!policy::refresh_src_ifindexes(rules_, [](const std::string& d) { return if_nametoindex(d.c_str()); })
           .empty()) {
    write_rules();
  }
}

void PolicyRuntime::uplink_down(const UplinkView& uplink) { kernel_.remove_table(uplink.id, uplink.family); }

void PolicyRuntime::refresh_lan(const std::vector<UplinkView>& uplinks) {
  (void)uplinks;
  for (const auto& l : list_links()) {
    // mwan3 classifies everything that enters the router except on its WANs: so does uplinkd, on
    // every device that is not an uplink's (LAN bridges, VLANs, tunnels), including ones made later.
    if (l.loopback || uplink_devices_.count(l.name) != 0) continue;
    if (dp_.lan_attached(l.ifindex)) continue;
    try {
      dp_.attach_lan(l.ifindex, l.name, !l.ethernet);
      log::info("LAN classifier attached to " + l.name);
    } catch (const datapath::DatapathError& e) {
      log::warn(std::string("LAN device ") + l.name + ": " + e.what());
    }
  }
}

void PolicyRuntime::refresh_connected() {
  std::vector<netlink::RoutePrefix> now;
  for (int family : {AF_INET, AF_INET6}) {
    std::string error;
    std::vector<netlink::RoutePrefix> part;
    if (netlink::connected_networks(family, &part, &error) == 0) now.insert(now.end(), part.begin(), part.end());
  }
  if (now == connected_) return;
  connected_ = now;
  std::vector<lpm_key> keys;
  keys.reserve(now.size());
  for (const auto& p : now) keys.push_back(to_lpm(p));
  dp_.set_connected(keys);
}

nlohmann::json PolicyRuntime::policies_json() const { return policy::policies_json(table_); }

nlohmann::json PolicyRuntime::rules_json() const {
  nlohmann::json rules = policy::rules_json(rules_);
  for (size_t i = 0; i < rules.size() && i < rules_.entries.size(); ++i) {
    const rule_counter c = dp_.rule_counters(static_cast<uint32_t>(i));
    rules[i]["packets"] = c.packets;
    rules[i]["bytes"] = c.bytes;
  }
  return rules;
}

nlohmann::json PolicyRuntime::connected_json() const {
  nlohmann::json out = {{"ipv4", nlohmann::json::array()}, {"ipv6", nlohmann::json::array()}};
  for (const auto& p : connected_) out[p.address.is_v4() ? "ipv4" : "ipv6"].push_back(p.str());
  return out;
}

}  // namespace uplinkd
