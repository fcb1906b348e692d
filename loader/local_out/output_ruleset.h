// The router's own traffic through every mwan3 rule (issue 15): the nft commands of uplinkd's
// output table, compiled from the same rules the LAN classifier runs. Pure text, no kernel access:
// output_table.h loads it through libnftables; tests read it.
//
// Why an nft `type route hook output` chain and not cgroup socket hooks: the router's own `ping`
// (raw and ICMP datagram sockets) and unconnected sends other than UDP sendmsg never reach a cgroup
// sock_addr hook, and a socket hook decides once per socket, not per connection as mwan3 does. A
// route chain sees every locally generated packet of every protocol, and the kernel routes the
// packet again when the chain changed its mark (ip_route_me_harder), which is exactly mwan3's
// mangle OUTPUT chain plus its fwmark ip rules. The ipsets are nft sets already, and the daemon
// links libnftables for its ct mark table (netlink/ct_mark.h), so nothing new is needed.
//
// The table (family inet) holds, in this order of evaluation (mwan3-behaviour.md sections 4, 5):
//   chain output (route, priority mangle):
//     meta mark & MASK != 0 return         a socket's own mark wins (the probes, `uplinkctl use`)
//     ct mark & MASK == M  mark M, accept  per uplink mark M: the connection keeps its uplink (the
//                                          ct mark table saves it in postrouting; a connection that
//                                          came in on an uplink is answered by it)
//     ip daddr @connected_v4  MMX_DEFAULT  connected and local networks stay in the main table
//     <rule i's matches> goto rule<i>_v4   user rules in file order, first match wins
//   chain rule<i>_v4: [sticky: reuse the uplink this source had within the timeout while it is
//     still a member now], then `numgen random mod 4294967295 vmap @policy<p>_v4`, [sticky:
//     remember the choice], accept.
//   map policy<p>_v4 (interval, number -> jump mark_<M>): the policy's pick table, the same
//     thresholds as the classifier's (policy::PickTable), or the whole range to the last_resort
//     mark. set members<p>_v4: the marks of the members carrying new flows now.
//   chain mark_<M>: meta mark set meta mark & ~MASK | M (other bits of the mark are kept; nft
//     bitwise operations take constants only before kernel 6.13, so one chain per mark).
//   set sticky<i>_<id>_v4 (dynamic, timeout): sources rule i sent by uplink id.
//   sets connected_v4/_v6, ipset<k>_v4/_v6: copies the daemon keeps of the connected networks and
//     of each `option ipset` set (a rule cannot name a set of another table).
//   chain source_fix (nat postrouting, srcnat): a router packet re-routed to an uplink whose
//     address it does not carry (its source was chosen by the main table's route) is masqueraded
//     to that uplink's address, as fw4's wan zone does; without it the ISP drops it as spoofed.
// The same for IPv6 with _v6 names and `ip6`. Failover rewrites only map and set elements
// (policy_commands, sticky_flush_commands): the chains are rebuilt at start and reload only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config/config.h"
#include "netlink/nft_set_parse.h"
#include "policy/policy_table.h"
#include "policy/rule_compiler.h"

namespace uplinkd::local_out {

// An enabled uplink as the output table sees it.
struct OutputUplink {
  uint32_t id = 0;
  uint32_t mark = 0;
  std::string device;  // "" when not known: no source_fix rule for it
  int family = 4;      // 4 or 6
};

struct OutputPlan {
  std::string table;  // nft identifier, checked by the caller (OutputTable)
  policy::MarkSpace marks;
  std::vector<OutputUplink> uplinks;
  std::vector<uint32_t> policy_ids;  // the user policies' ids (kFirstUserPolicyId and up)
  const policy::CompiledRules* rules = nullptr;
};

// The table name for an instance: "uplinkd-out", or "uplinkd-out_<instance>". The '-' keeps it
// apart from every name the ct mark table takes ("uplinkd", "uplinkd_<instance>").
std::string output_table_name(const std::string& instance);

// The enabled uplinks of `cfg` with their marks.
std::vector<OutputUplink> output_uplinks(const config::Config& cfg);

// Every command that (re)builds the table: a leftover table of the same name is replaced. Maps and
// sets are created empty; OutputTable runs policy_commands() and the address sets in the same
// transaction, so no packet meets an empty policy map (it would match no element and leave the
// packet unmarked, on the main table's routes).
std::string table_commands(const OutputPlan& plan);

// Flushes and refills every policy map and member set for the policies resolved now. `policy_ids`:
// user policy name -> id (policy::assign_policy_ids).
std::string policy_commands(const OutputPlan& plan, const policy::PolicyTable& resolved,
                            const std::map<std::string, uint32_t>& policy_ids);

// Flushes and refills one address set (`connected` or `ipset<k>`) of both families.
std::string address_set_commands(const std::string& table, const std::string& set_base,
                                 const std::vector<netlink::SetPrefix>& prefixes);

// Drops every sticky entry of uplink `id` (it went down).
std::string sticky_flush_commands(const OutputPlan& plan, uint32_t id);

// The nft match text of rule `entry` for family 4 or 6 (without the goto); empty when the rule
// cannot match the router's own packets of that family (wrong family, no address of that family,
// or a src_iface: mwan3's `-i` never matches in OUTPUT).
std::string rule_match(const rule_entry& entry, const policy::RuleInfo& info, int family);

}  // namespace uplinkd::local_out
