#include "daemon/policy_runtime.h"

#include <bpf/bpf.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "datapath/rule_state.h"
#include "lifecycle/teardown.h"
#include "policy/rule_identity.h"
#include "policy/rule_tables.h"

namespace uplinkd {
namespace {

// rule_entry has no padding (maps/uplinkd_maps.h asserts its size), so bytes compare as values.
bool same_entries(const std::vector<rule_entry>& a, const std::vector<rule_entry>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof a[0]) == 0);
}

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

uint32_t lookup_ifindex(const std::string& device) { return if_nametoindex(device.c_str()); }

std::vector<netlink::SetPrefix> set_prefixes(const std::vector<netlink::RoutePrefix>& routes) {
  std::vector<netlink::SetPrefix> out;
  out.reserve(routes.size());
  for (const auto& r : routes) out.push_back({r.address, static_cast<uint8_t>(r.prefixlen)});
  return out;
}

int family_of(const config::InterfaceConfig& i) {
  return i.family == config::Family::Ipv6 ? AF_INET6 : AF_INET;
}

const config::InterfaceConfig* enabled_interface(const config::Config& cfg, uint32_t id) {
  for (const auto& i : cfg.interfaces) {
    if (i.id == id && i.enabled) return &i;
  }
  return nullptr;
}

// A rule that every packet of `family` (4 or 6) matches: the "default rule" whose policy the router's
// own traffic follows (mwan3 ships default_rule_v4 with dest_ip 0.0.0.0/0 and default_rule_v6 ::/0).
bool matches_every_destination(const rule_entry& e, const policy::RuleInfo& info, uint8_t family) {
  if (e.family != 0 && e.family != family) return false;
  if (e.proto != 0 || e.n_src != 0 || e.n_sport != 0 || e.n_dport != 0 || e.set_id != 0) return false;
  if (e.src_ifindex != 0 || !info.src_iface.empty()) return false;
  if (e.n_dst == 0) return true;
  for (unsigned k = 0; k < e.n_dst && k < UPLINKD_RULE_MAX_ADDRS; ++k) {
    if (e.dst[k].prefixlen == 0 && e.dst[k].family == family) return true;
  }
  return false;
}

}  // namespace

PolicyRuntime::Compiled PolicyRuntime::compile(const config::Config& cfg) {
  policy::check_policy_limits(cfg);
  Compiled c;
  c.marks = policy::MarkSpace::from_mask(cfg.globals.mmx_mask);
  c.policy_ids = policy::assign_policy_ids(cfg);
  c.rules = policy::compile_rules(cfg, c.policy_ids, lookup_ifindex);
  return c;
}

PolicyRuntime::PolicyRuntime(const config::Config& cfg, datapath::Datapath& dp,
                             const policy::OnlineInterfaces& initially_online)
    : cfg_(cfg), dp_(dp) {
  Compiled compiled = compile(cfg_);
  marks_ = compiled.marks;
  policy_ids_ = std::move(compiled.policy_ids);
  rules_ = std::move(compiled.rules);
  log_rule_warnings();
  for (const auto& i : cfg_.interfaces) {
    if (!i.device.empty()) uplink_devices_.insert(i.device);
  }
  for (int family : {AF_INET, AF_INET6}) {
    std::string error;
    if (kernel_.install_general(family, cfg_.globals.mmx_mask, &error) != 0) throw std::runtime_error(error);
  }
  for (const auto& i : cfg_.interfaces) {
    if (!i.enabled) continue;
    std::string error;
    if (install_uplink_rules(i, &error) != 0) throw std::runtime_error("interface " + i.name + ": " + error);
  }
  load_sets();
  write_rules();
  write_classifier_cfg();
  publish(initially_online);
}

PolicyRuntime::~PolicyRuntime() {
  if (!lifecycle::keep_kernel_state()) {
    for (const auto& l : list_links()) dp_.detach_lan(l.ifindex);
  }
  sets_.reset();
  if (sets_fd_ >= 0) close(sets_fd_);
}

// The nft sets that `option ipset` rules name, loaded into the classifier's tries before the rules
// that use them are written (a rule never sees a set id whose trie is not filled yet).
void PolicyRuntime::load_sets() {
  if (!sets_) {
    const std::string path = dp_.pin_dir() + "/" + UPLINKD_MAP_SETS;
    sets_fd_ = bpf_obj_get(path.c_str());
    if (sets_fd_ < 0) throw std::runtime_error("opening " + path + ": " + std::strerror(errno));
    sets_ = std::make_unique<datapath::SetMaps>(sets_fd_);
  }
  sets_->configure(rules_.sets);
  sets_->refresh(true);
}

void PolicyRuntime::log_rule_warnings() const {
  for (const auto& info : rules_.info) {
    for (const auto& w : info.warnings) log::warn("rule " + info.name + ": " + w);
  }
}

int PolicyRuntime::install_uplink_rules(const config::InterfaceConfig& i, std::string* error) {
  return kernel_.install_uplink(i.id, i.device, family_of(i),
                                config::mark_for_id(i.id, cfg_.globals.mmx_mask), cfg_.globals.mmx_mask,
                                error);
}

void PolicyRuntime::write_classifier_cfg() {
  classifier_cfg c{};
  c.mmx_mask = cfg_.globals.mmx_mask;
  c.n_rules = static_cast<uint32_t>(rules_.entries.size());
  c.default_mark = marks_.default_mark;
  c.flow_timeout_s = cfg_.globals.flow_timeout_s;
  c.flow_timeout_tcp_s = cfg_.globals.flow_timeout_tcp_s;
  c.flow_timeout_udp_s = cfg_.globals.flow_timeout_udp_s;
  if (cfg_.globals.reset_stale_tcp) c.flags |= UPLINKD_CFG_RESET_STALE_TCP;
  dp_.write_classifier_cfg(c);
}

std::string PolicyRuntime::reload(const config::Config& next, Compiled compiled,
                                  const policy::OnlineInterfaces& online) {
  std::string problems;
  auto note = [&](const std::string& what) { problems += (problems.empty() ? "" : "; ") + what; };
  const config::Config old = std::move(cfg_);
  std::vector<std::string> old_rule_names;
  for (const auto& info : rules_.info) old_rule_names.push_back(info.name);
  cfg_ = next;
  marks_ = compiled.marks;
  policy_ids_ = std::move(compiled.policy_ids);
  rules_ = std::move(compiled.rules);
  log_rule_warnings();

  uplink_devices_.clear();
  for (const auto& i : cfg_.interfaces) {
    if (!i.device.empty()) uplink_devices_.insert(i.device);
  }
  // A device that became an uplink's is no LAN any more; one that stopped being one is picked up as
  // LAN by the next refresh().
  for (const auto& l : list_links()) {
    if (uplink_devices_.count(l.name) != 0 && dp_.lan_attached(l.ifindex)) {
      dp_.detach_lan(l.ifindex);
      log::info("LAN classifier detached from " + l.name + " (now an uplink's device)");
    }
  }

  for (int family : {AF_INET, AF_INET6}) {
    std::string error;
    if (kernel_.install_general(family, cfg_.globals.mmx_mask, &error) != 0) note(error);
  }
  for (const auto& i : old.interfaces) {
    if (!i.enabled) continue;
    const config::InterfaceConfig* now = enabled_interface(cfg_, i.id);
    if (now == nullptr || family_of(*now) != family_of(i)) kernel_.remove_uplink(i.id, family_of(i));
  }
  // install_uplink() leaves identical rules alone and replaces those whose device or mark changed.
  for (const auto& i : cfg_.interfaces) {
    if (!i.enabled) continue;
    std::string error;
    if (install_uplink_rules(i, &error) != 0) note("interface " + i.name + ": " + error);
  }

  // Policies first, so a rule never points at a policy id the map does not hold yet; the rule count
  // last, so the classifier reads only rules already written. The output table is left out of this
  // publish (its maps are those of the old rules) and rebuilt whole below.
  std::unique_ptr<local_out::OutputTable> output = std::move(output_);
  publish(online);
  output_ = std::move(output);
  load_sets();
  carry_rule_state(old_rule_names, note);
  write_rules();
  write_classifier_cfg();
  if (output_) {
    try {
      rebuild_output();
    } catch (const std::exception& e) {
      note(e.what());
    }
  }
  return problems;
}

// Per-rule counters, sticky entries and flows' rule ids follow their rule by name (rule_identity.h).
void PolicyRuntime::carry_rule_state(const std::vector<std::string>& old_rule_names,
                                     const std::function<void(const std::string&)>& note) {
  std::vector<std::string> new_rule_names;
  for (const auto& info : rules_.info) new_rule_names.push_back(info.name);
  const std::vector<uint32_t> remap = policy::rule_id_remap(old_rule_names, new_rule_names);
  if (policy::is_identity(remap)) return;
  try {
    const datapath::RuleStateCarried c = datapath::carry_rule_state(dp_.pin_dir(), remap);
    log::info("reload: rules renumbered; per-rule state follows each rule by name: counters of " +
              std::to_string(c.counters_moved) + " rule(s) moved, " + std::to_string(c.sticky_moved) +
              " sticky entries moved, " + std::to_string(c.sticky_dropped) + " of removed rules dropped, " +
              std::to_string(c.flows_relabelled) + " flows relabelled");
  } catch (const std::exception& e) {
    note(std::string("per-rule counters and sticky entries stay by position: ") + e.what());
  }
}

std::vector<PolicyRuntime::RouteMember> PolicyRuntime::default_route_members(int family) const {
  const uint8_t fam = family == AF_INET6 ? 6 : 4;
  for (size_t i = 0; i < rules_.entries.size() && i < rules_.info.size(); ++i) {
    const rule_entry& e = rules_.entries[i];
    if (!matches_every_destination(e, rules_.info[i], fam)) continue;
    std::vector<RouteMember> members;
    for (const auto& [name, id] : policy_ids_) {
      if (id != e.policy_id) continue;
      const policy::PolicyState* p = table_.find(name);
      if (p == nullptr) break;
      for (const auto& m : p->family(fam == 6 ? config::Family::Ipv6 : config::Family::Ipv4).members) {
        members.push_back({m.id, m.weight});
      }
    }
    return members;  // empty for default / unreachable / blackhole: the system's routes apply
  }
  return {};
}

// The entries (their actions: policy, sticky) and the classifier's tables of them, which flip in one
// update (Datapath::write_rules says in which order, and why).
// Entries equal to those last written are left as they are: the tables are a function of the
// entries alone, and writing them runs on the event loop (tens of ms at 256 rules with full lists:
// README, `rule_reload_bench`), which a reload that changed only, say, a track_ip should not cost.
void PolicyRuntime::write_rules() {
  if (written_rules_ && same_entries(*written_rules_, rules_.entries)) return;
  dp_.write_rules(rules_.entries, policy::compile_rule_tables(rules_.entries));
  written_rules_ = rules_.entries;
}

void PolicyRuntime::enable_output_table(const std::string& table) {
  output_ = std::make_unique<local_out::OutputTable>(table);
  refresh_connected();  // before the first packet meets the table: connected networks stay in main
  try {
    rebuild_output();
  } catch (...) {
    output_.reset();  // nothing was installed; the source rules stay unconditional
    throw;
  }
}

// The whole table: at start and at reload (rules, marks, policies and set ids may all change).
void PolicyRuntime::rebuild_output() {
  local_out::OutputPlan plan;
  plan.marks = marks_;
  plan.uplinks = local_out::output_uplinks(cfg_);
  for (const auto& [name, id] : policy_ids_) plan.policy_ids.push_back(id);
  plan.rules = &rules_;
  std::vector<std::vector<netlink::SetPrefix>> ipsets;
  for (size_t k = 1; k <= rules_.sets.size(); ++k) {
    ipsets.push_back(sets_ ? sets_->prefixes(static_cast<uint8_t>(k)) : std::vector<netlink::SetPrefix>{});
  }
  output_->rebuild(std::move(plan), table_, policy_ids_, set_prefixes(connected_), ipsets);
}

// Updates of the output table after it is built: a failure is logged (once until it changes) and
// the daemon goes on; the table keeps its previous elements.
void PolicyRuntime::output_step(const std::string& what, const std::function<void()>& step) {
  if (!output_) return;
  try {
    step();
    last_output_error_.clear();
  } catch (const std::exception& e) {
    const std::string error = what + ": " + e.what();
    if (error != last_output_error_) log::error(error);
    last_output_error_ = error;
  }
}

void PolicyRuntime::publish(const policy::OnlineInterfaces& online) {
  table_ = policy::resolve_policies(cfg_, online);
  output_step("the router's own traffic", [&] {
    output_->publish(table_, policy_ids_);
    // mwan3 drops a sticky entry when its interface goes down.
    for (const auto& i : cfg_.interfaces) {
      if (published_online_.count(i.name) != 0 && online.count(i.name) == 0) output_->uplink_down(i.id);
    }
  });
  published_online_ = online;
  // The built-in targets of use_policy first: they never change, but a restart must find them.
  dp_.write_policy(UPLINKD_POLICY_SLOT(policy::kPolicyIdDefault, 4), fallback_entry(marks_.default_mark));
  dp_.write_policy(UPLINKD_POLICY_SLOT(policy::kPolicyIdDefault, 6), fallback_entry(marks_.default_mark));
  dp_.write_policy(UPLINKD_POLICY_SLOT(policy::kPolicyIdUnreachable, 4),
                   fallback_entry(marks_.unreachable_mark));
  dp_.write_policy(UPLINKD_POLICY_SLOT(policy::kPolicyIdUnreachable, 6),
                   fallback_entry(marks_.unreachable_mark));
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
  // dnsmasq's nftset= and firewall reloads change sets at run time.
  if (sets_ && sets_->refresh() > 0) {
    output_step("the router's own traffic (ipset copies)", [&] {
      for (size_t k = 1; k <= rules_.sets.size(); ++k)
        output_->set_ipset(k, sets_->prefixes(static_cast<uint8_t>(k)));
    });
  }
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
  refresh_source_rules(uplinks);
  if (!policy::refresh_src_ifindexes(rules_, [](const std::string& d) {
         return if_nametoindex(d.c_str());
       }).empty()) {
    // On the loop: a table write that fails leaves the previous tables in force; say so, go on.
    try {
      write_rules();
    } catch (const std::exception& e) {
      log::warn(std::string("src_iface changed, but the classifier keeps the previous rules: ") + e.what());
    }
  }
}

void PolicyRuntime::uplink_down(const UplinkView& uplink) {
  output_step("the router's own traffic (sticky entries)", [&] { output_->uplink_down(uplink.id); });
  kernel_.remove_table(uplink.id, uplink.family);
  kernel_.remove_source_rules(uplink.id, uplink.family);
}

// The router's own addresses answer by their uplink (issue 3, inbound): without `from <address> lookup
// N`, a reply from wan2's address would follow the main table's default route out of wan1, where the ISP
// drops it as spoofed. Kept in step with DHCP renewals and added or removed addresses; an uplink whose
// device is down or absent has none.
void PolicyRuntime::refresh_source_rules(const std::vector<UplinkView>& uplinks) {
  for (const auto& u : uplinks) {
    if (u.ifindex == 0) {
      kernel_.remove_source_rules(u.id, u.family);
      continue;
    }
    std::string error;
    // With the output table, the source rules yield to the uplink marks it gives (policy_rules.h).
    const uint32_t unmarked = output_ ? cfg_.globals.mmx_mask : 0;
    if (kernel_.sync_source_rules(u.id, u.ifindex, u.family, &error, nullptr, unmarked) != 0 &&
        error != last_source_error_) {
      log::warn("interface " + u.device + ": " + error);
      last_source_error_ = error;
    }
  }
}

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
    if (netlink::connected_networks(family, &part, &error) == 0)
      now.insert(now.end(), part.begin(), part.end());
  }
  if (now == connected_) return;
  connected_ = now;
  output_step("the router's own traffic (connected networks)",
              [&] { output_->set_connected(set_prefixes(connected_)); });
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
  if (!sets_) return rules;
  // Where each ipset rule's set was found and how many prefixes its trie holds (or why it is empty).
  for (const auto& st : sets_->status()) {
    for (size_t i = 0; i < rules.size() && i < rules_.entries.size(); ++i) {
      if (rules_.entries[i].set_id != st.id) continue;
      rules[i]["set"] = {
          {"name", st.name}, {"table", st.where}, {"prefixes", st.prefixes}, {"problem", st.problem}};
    }
  }
  return rules;
}

nlohmann::json PolicyRuntime::connected_json() const {
  nlohmann::json out = {{"ipv4", nlohmann::json::array()}, {"ipv6", nlohmann::json::array()}};
  for (const auto& p : connected_) out[p.address.is_v4() ? "ipv4" : "ipv6"].push_back(p.str());
  return out;
}

}  // namespace uplinkd
