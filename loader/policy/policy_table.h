// Policies as mwan3 applies them (../shared/reference/mwan3-behaviour.md sections 4 and 5): the marks
// that mmx_mask gives, which members of a policy carry new flows while some interfaces are online, the
// share each gets, and the per-flow pick table the BPF classifier indexes. Pure logic, no kernel access:
// the datapath loads what this computes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "maps/uplinkd_maps.h"

namespace uplinkd::policy {

// A pick table holds at most this many members per policy and address family: the classifier walks it in
// a bounded loop, and a policy rarely balances over more than a handful of uplinks. mwan3 has no such cap;
// check_policy_limits() reports a policy over it as a configuration error.
inline constexpr size_t kMaxPolicyMembers = UPLINKD_POLICY_MAX_MEMBERS;

// mwan3 starts its search for the lowest metric at 256 and skips a member whose metric is above it (with a
// warning); a member with metric 256 itself is used like any other.
inline constexpr int kMaxMemberMetric = 256;

// What mmx_mask leaves room for (mwan3's common.sh): interface ids 1..max_interfaces, then three reserved
// ids just below mmdefault = 2^bits - 1, each id spread over the mask's set bits to make a mark.
struct MarkSpace {
  uint32_t mask = 0;
  int bits = 0;                 // set bits in mask
  uint32_t mmdefault = 0;       // 2^bits - 1, whose mark is the mask itself
  uint32_t blackhole_id = 0;    // mmdefault - 2
  uint32_t unreachable_id = 0;  // mmdefault - 1
  uint32_t max_interfaces = 0;  // mmdefault - 3: the highest interface id
  uint32_t blackhole_mark = 0;
  uint32_t unreachable_mark = 0;
  uint32_t default_mark = 0;  // mwan3's MMX_DEFAULT (= mask): route by the main table

  // Throws std::invalid_argument when the mask has fewer than 3 bits set: mwan3 then has no interface id
  // left (0x300 would give mmdefault 3, blackhole id 1, unreachable id 2). Config parsing rejects such a
  // mask earlier, with its line.
  static MarkSpace from_mask(uint32_t mmx_mask);

  // The mark of interface id `id`; 0 (no mark) outside 1..max_interfaces.
  [[nodiscard]] uint32_t interface_mark(uint32_t id) const;
};

// What a policy does when none of its members is online (`option last_resort`).
enum class LastResort { Unreachable, Blackhole, Default };

// "blackhole" and "default" as named; any other word is unreachable, as mwan3's `case` falls through.
LastResort parse_last_resort(std::string_view word);
std::string_view last_resort_word(LastResort last_resort);
uint32_t last_resort_mark(LastResort last_resort, const MarkSpace& marks);

// A rule's use_policy of default, unreachable or blackhole is a fixed mark, not a policy; mwan3 tests these
// names before policy names, so a policy called "default" is never reached from a rule. nullopt: a policy.
std::optional<uint32_t> builtin_policy_mark(std::string_view use_policy, const MarkSpace& marks);

// The per-flow choice among weighted members, in the form the classifier loads (struct policy_entry in
// maps/uplinkd_maps.h): a flow takes the first member i with hash <= thresholds[i], so member i takes the
// hashes above thresholds[i-1] (from 0 for i = 0) up to and including thresholds[i]; the last threshold is
// always UINT32_MAX. Each member's range is its weight share of the 2^32 hashes, rounded so every count is
// within one hash of exact. No members (n_members = 0): every flow gets fallback_mark, the last_resort.
struct PickTable {
  std::vector<uint32_t> thresholds;  // non-decreasing, at most kMaxPolicyMembers; the last is UINT32_MAX
  std::vector<uint32_t> marks;       // same length
  uint32_t fallback_mark = 0;        // the last_resort mark, used when there are no members

  // The member a flow hash selects; nullopt when there are none. The reference for the classifier's loop.
  [[nodiscard]] std::optional<size_t> index_for(uint32_t flow_hash) const;
  [[nodiscard]] uint32_t mark_for(uint32_t flow_hash) const;
};

// Builds the table over weights and their marks, in that order. Throws std::invalid_argument when given no
// weights, more than kMaxPolicyMembers, mismatched lengths, or weights adding up to 0 or to 2^47 or more.
PickTable build_pick_table(const std::vector<uint64_t>& weights, const std::vector<uint32_t>& marks,
                           uint32_t fallback_mark = 0);

// One member carrying new flows.
struct ActiveMember {
  std::string member;     // member section name
  std::string interface;  // interface section name
  uint32_t id = 0;        // mwan3 interface id, also its routing table
  uint32_t mark = 0;
  int metric = 0;
  int weight = 0;
  int share_pct = 0;  // weight * 100 / total weight, truncated: the figure `mwan3 policies` prints
};

// One policy resolved for one address family (mwan3 builds a separate chain per family; a member counts
// for the family of its interface).
struct FamilyPolicy {
  std::vector<ActiveMember> members;  // the lowest-metric online members, in use_member order; empty when
                                      // the last resort applies
  uint64_t total_weight = 0;          // of `members`
  LastResort last_resort = LastResort::Unreachable;
  uint32_t last_resort_mark = 0;
  PickTable table;  // over `members`, in their order

  [[nodiscard]] bool uses_last_resort() const { return members.empty(); }
  // The member a new flow with this hash goes to; nullptr when the last resort applies.
  [[nodiscard]] const ActiveMember* pick(uint32_t flow_hash) const;
  // The mark a new flow with this hash gets: its member's, or the last_resort mark.
  [[nodiscard]] uint32_t mark_for_flow(uint32_t flow_hash) const { return table.mark_for(flow_hash); }
};

// `fp` as the classifier's policies map value: n_members, fallback_mark, and per member its threshold, mark
// and uplink id; unused slots are zero.
policy_entry to_policy_entry(const FamilyPolicy& fp);

struct PolicyState {
  std::string name;
  int line = 0;  // of the `config policy` header
  LastResort last_resort = LastResort::Unreachable;
  FamilyPolicy ipv4;
  FamilyPolicy ipv6;

  [[nodiscard]] const FamilyPolicy& family(config::Family f) const {
    return f == config::Family::Ipv4 ? ipv4 : ipv6;
  }
};

struct PolicyTable {
  MarkSpace marks;
  std::vector<PolicyState> policies;  // by name in byte order, as `mwan3 policies` lists them

  [[nodiscard]] const PolicyState* find(std::string_view name) const;
};

// Names of the interfaces currently online (the tracker's verdict). A name here whose interface is
// disabled is ignored.
using OnlineInterfaces = std::set<std::string, std::less<>>;

// Throws config::ConfigError (file, policy line, use_member) when a policy has more than kMaxPolicyMembers
// members of one family with a usable metric: its pick table could not hold them all at once.
void check_policy_limits(const config::Config& cfg);

// One policy for one family: members of enabled, online interfaces of that family with metric <= 256;
// the lowest metric among them wins and every member with that metric shares by weight.
FamilyPolicy resolve_policy(const config::Config& cfg, const config::PolicyConfig& policy,
                            config::Family family, const OnlineInterfaces& online, const MarkSpace& marks);

// Every policy for both families. Runs check_policy_limits() first.
PolicyTable resolve_policies(const config::Config& cfg, const OnlineInterfaces& online);

// The table as JSON, shaped like mwan3's ubus `mwan3 status` policies so tools that read those read this:
//   {"ipv4": {"<policy>": [{"interface", "percent", "member", "id", "mark", "metric", "weight"}, ...]},
//    "ipv6": {...}, "last_resort": {"<policy>": {"action": "unreachable", "mark": 15872}}}
// An empty member array means the last resort applies. Members are in mwan3's chain order: the reverse of
// use_member order. "percent" is the share `mwan3 policies` prints (ubus prints a running ratio instead).
nlohmann::json policies_json(const PolicyTable& table);

// `uplinkctl policies`, byte for byte as `mwan3 policies` prints it:
//   Current ipv4 policies:
//   balanced:
//    wanb (50%)
//    wan (50%)
//   wan_only:
//    unreachable
//   <empty line>
//   Current ipv6 policies:
//   ...
//   <empty line>
// Rendered from policies_json() output, so the client can print what the daemon sent; the IPv6 part is
// left out when the JSON has no "ipv6" key (mwan3 leaves it out on a router without ip6tables).
std::string format_policies(const nlohmann::json& policies);
std::string format_policies(const PolicyTable& table);

}  // namespace uplinkd::policy
