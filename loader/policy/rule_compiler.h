// mwan3 rules compiled for the LAN classifier (../shared/reference/mwan3-behaviour.md sections 1, 4, 5):
// each `config rule` becomes one `struct rule_entry` of the map ABI (maps/uplinkd_maps.h), in file order,
// first match wins. Pure logic, no kernel access: the datapath writes the entries to the `rules` map.
//
// What mwan3 2.12 does with a rule and what uplinkd does instead:
// - Ports with a proto other than tcp/udp: mwan3 logs a warning and drops the ports, so the rule matches
//   every packet of that protocol. uplinkd refuses the configuration, naming the option.
// - An address of the wrong family for `option family`: mwan3 logs and skips the rule; uplinkd refuses.
// - Host bits set in a CIDR (10.0.0.1/8): iptables masks them silently; uplinkd refuses and names the
// network.
// - src_iface whose device does not exist yet: mwan3 leaves the rule out until the interface comes up;
//   uplinkd keeps the rule in its place with src_ifindex = kUnresolvedIfindex, which matches no packet,
//   and refresh_src_ifindexes() fills it in later (rule indices, hence counters and sticky keys, stay put).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/config.h"
#include "maps/uplinkd_maps.h"

namespace uplinkd::config::uci {
struct Package;
}

namespace uplinkd::policy {

// Policy ids (the index into the `policies` map). A rule's use_policy of default, unreachable or blackhole
// is a fixed mark in mwan3, not a policy; uplinkd gives each a reserved id so that every rule has a policy
// id. The daemon writes both family slots of ids 0..2 (UPLINKD_POLICY_SLOT) once, as entries with
// n_members = 0 and fallback_mark = MMX_DEFAULT, the unreachable mark and the blackhole mark. User
// policies start at kFirstUserPolicyId.
inline constexpr uint32_t kPolicyIdDefault = 0;      // use_policy default: the main table (MMX_DEFAULT)
inline constexpr uint32_t kPolicyIdUnreachable = 1;  // use_policy unreachable
inline constexpr uint32_t kPolicyIdBlackhole = 2;    // use_policy blackhole
inline constexpr uint32_t kFirstUserPolicyId = 3;

// src_ifindex of a rule whose src_iface has no device now. No packet arrives with this ifindex (the kernel
// hands out positive ints), so the classifier's plain `ifindex == src_ifindex` test never matches it.
inline constexpr uint32_t kUnresolvedIfindex = 0xFFFFFFFFU;

// The ifindex of a rule's src_iface (the value as written: mwan3 means a network interface such as `lan`,
// whose device the daemon looks up), or 0 when it has no device now.
using IfindexResolver = std::function<uint32_t(const std::string& src_iface)>;

// What the CLI and the daemon need to know about a compiled rule beyond its map entry.
struct RuleInfo {
  std::string name;
  int line = 0;                       // of the `config rule` header
  std::string use_policy;             // as written: a policy name, or default / unreachable / blackhole
  std::string set;                    // ipset name; empty when none (entry.set_id is its id)
  std::string src_iface;              // as written; empty when none
  bool src_iface_pending = false;     // src_iface has no device yet: entry.src_ifindex is kUnresolvedIfindex
  uint32_t timeout_s = 600;           // `option timeout`, also when the rule is not sticky
  bool logging = false;               // `option logging` (uplinkd has no per-rule packet log; kept for show)
  std::vector<std::string> warnings;  // things mwan3 ignores here too, for the log (e.g. an unknown option)
};

struct CompiledRules {
  std::vector<rule_entry> entries;  // rules[i] of the map ABI, in file order
  std::vector<RuleInfo> info;       // same length and order
  std::vector<std::string> sets;    // sets[k] is the set with id k + 1, in order of first use
};

// User policies' ids: kFirstUserPolicyId, +1, ... in file order. Throws config::ConfigError (the policy's
// header line) when there are more than UPLINKD_MAX_POLICIES - kFirstUserPolicyId policies.
std::map<std::string, uint32_t> assign_policy_ids(const config::Config& cfg);

// Compiles cfg.rules in order. `policy_ids` maps user policy names to ids (see assign_policy_ids);
// `resolve` gives src_iface ifindexes (an empty function counts every src_iface as pending).
//
// Throws config::ConfigError naming file, line and option for a rule the classifier cannot honour.
// config::RuleConfig keeps only the rule's header line; when `source` (the same file parsed with
// config::uci::parse) is given, errors name the line of the option, or of the list entry, at fault.
CompiledRules compile_rules(const config::Config& cfg, const std::map<std::string, uint32_t>& policy_ids,
                            const IfindexResolver& resolve, const config::uci::Package* source = nullptr);

// Resolves every src_iface again (a device appeared, went away or was re-created with a new ifindex).
// Returns the indices of the entries whose src_ifindex changed: those the datapath must rewrite.
std::vector<size_t> refresh_src_ifindexes(CompiledRules& rules, const IfindexResolver& resolve);

// The compiled rules as JSON for `uplinkctl rules`, one object per rule in order:
//   {"name", "line", "family": "any"|"ipv4"|"ipv6", "proto": "all"|"tcp"|...|"47", "proto_number",
//    "src_ip": [...], "src_port": [...], "src_iface": null|"lan", "src_ifindex", "src_iface_pending",
//    "dest_ip": [...], "dest_port": [...], "ipset": null|"name", "set_id", "sticky", "timeout",
//    "use_policy", "policy_id", "logging", "warnings": [...]}
// Addresses print as a.b.c.d or a.b.c.d/len (the length only when shorter than the address); ports as
// 443 or 1000-2000.
nlohmann::json rules_json(const CompiledRules& rules);
nlohmann::json rule_json(const rule_entry& entry, const RuleInfo& info);

// One rule in mwan3-ish words, from rule_json() output:
//   https: tcp dport 443 -> balanced (sticky 600s)
//   voip: ipv4 udp from 192.168.1.10 sport 5060-5080 -> wan_only
//   guests: iif guest (no device yet) ipset vpn -> failover
//   all_v4: ipv4 to 0.0.0.0/0 -> failover
// The parts, each only when set: family, proto, from <src_ip>, sport <ports>, iif <src_iface>,
// to <dest_ip>, dport <ports>, ipset <name>; "all" when none is.
std::string rule_text(const nlohmann::json& rule);
// Every rule of rules_json() output, one line each, in order.
std::string format_rules(const nlohmann::json& rules);

}  // namespace uplinkd::policy
