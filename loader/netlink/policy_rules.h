// The rest of mwan3's kernel routing state (../shared/reference/mwan3-behaviour.md section 4), through
// libnl-route-3; UplinkRoutes owns each uplink's default route and its `fwmark lookup N` rule (pref 2000+N).
//
//   pref 1000+N   iif <device of N> lookup N          replies to what came in on uplink N leave through it
//   pref 1500+N   from <address of N> [fwmark 0/mask] lookup N
//                                                     one per global address on N's device: the router's
//                                                     own packets from that address (replies to a
//                                                     connection to it, a socket bound to it) leave by N,
//                                                     unless (with the mask) they carry an uplink mark
//   pref 2000+B   fwmark mark(B)/mask blackhole       B = blackhole id (2061 with mask 0x3F00)
//   pref 2000+U   fwmark mark(U)/mask unreachable     U = unreachable id (2062 with mask 0x3F00)
//   pref 3000+N   fwmark mark(N)/mask unreachable     marked for N but table N has no route: drop, do not
//                                                     fall through to the main table
//
// and table N's copies of main-table routes (mwan3rtmon's job), plus the list of connected networks the
// classifier sends to the main table. PolicyRules removes exactly what it added, nothing it found.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/ip_address.h"

// libnl's socket, at global scope (see uplink_routes.h).
struct nl_sock;

namespace uplinkd::netlink {

inline constexpr uint32_t kIifRulePrefBase = 1000;
// Between the iif rules and the fwmark rules, so an address's own uplink wins over any mark, and clear of
// mwan3's prefs (1000+N, 2000+N, 2000+general ids, 3000+N): ids 1 to 499 give 1501 to 1999. Neither
// mwan3 nor netifd (10000+, 20000+ for ip4table/ip6table) uses this range.
inline constexpr uint32_t kSourceRulePrefBase = 1500;
inline constexpr uint32_t kMaxSourceRuleId = 499;
inline constexpr uint32_t kFwmarkRulePrefBase = 2000;  // UplinkRoutes' rules, and the two general ones
inline constexpr uint32_t kUnreachableRulePrefBase = 3000;

// A destination prefix: address with its host bits clear, and its length.
struct RoutePrefix {
  IpAddress address;
  int prefixlen = 0;

  [[nodiscard]] std::string str() const;  // "192.0.2.0/24", "2001:db8::/64", "192.0.2.2/32"
  bool operator==(const RoutePrefix&) const = default;
  bool operator<(const RoutePrefix& other) const;  // by family, address bytes, then length
};

// mwan3's connected networks for `family` (AF_INET or AF_INET6): the destinations of every non-default
// route in the main and local tables (local, broadcast, anycast and multicast entries included), plus
// 224.0.0.0/3 for IPv4 as mwan3 adds it. Sorted, without duplicates. Returns 0 or a negative errno;
// `error` gets a sentence naming the table that could not be read.
int connected_networks(int family, std::vector<RoutePrefix>* networks, std::string* error);

class PolicyRules {
 public:
  PolicyRules();
  ~PolicyRules();  // removes everything still installed
  PolicyRules(const PolicyRules&) = delete;
  PolicyRules& operator=(const PolicyRules&) = delete;

  // Installs uplink `id`'s rules for `family`: pref 1000+id `iif <device> lookup id` and pref 3000+id
  // `fwmark mark/mask unreachable`. The iif rule names the device, so it keeps working when the device
  // is re-created (`ip rule` shows [detached] while it is missing). Calling again with another device or
  // mark replaces the uplink's rules (new ones first). A rule identical to one that was already there
  // (EEXIST) is left alone now and at removal. Returns 0 or a negative errno; `error` names the rule.
  int install_uplink(uint32_t id, const std::string& device, int family, uint32_t mark, uint32_t mask,
                     std::string* error);
  // Also removes the uplink's source rules (sync_source_rules).
  void remove_uplink(uint32_t id, int family);

  // Makes uplink `id`'s source rules for `family` match the global (universe-scope) addresses of that
  // family on `ifindex` now: one `from <address>/32 (/128) lookup id` at pref 1500+id per address, new
  // ones added before stale ones go. Link-local and host-scope addresses get none. Callable on every
  // address or route change; cheap when nothing changed. A rule identical to one that was already there
  // is left alone, now and at removal. Returns 0 or a negative errno; `error` names the rule or the
  // device whose addresses could not be read. `addresses`, when given, gets the addresses ruled now.
  // `unmarked_mask` non-zero: the rules read `from <address> fwmark 0/<mask> lookup id`, so they apply
  // only to packets without an uplink mark. uplinkd's output table (local_out/) marks the router's own
  // packets by the rules after their source was chosen by the main table; an unconditional source rule
  // would send every such packet back by the uplink of its source address. So with a mask, a rule of
  // the unconditional form at the same pref, table and address is removed: a daemon started with
  // local_rules off (every uplinkd before it was the default) left it; it is not ours to keep.
  int sync_source_rules(uint32_t id, int ifindex, int family, std::string* error,
                        std::vector<IpAddress>* addresses = nullptr, uint32_t unmarked_mask = 0);
  // Removes uplink `id`'s source rules for `family` (its device went down or away).
  void remove_source_rules(uint32_t id, int family);

  // The two general rules for `family`, from mmx_mask as mwan3 computes them: pref 2000+blackhole id
  // `fwmark blackhole_mark/mask blackhole` and pref 2000+unreachable id `fwmark unreachable_mark/mask
  // unreachable`. -EINVAL for a mask with fewer than 3 bits.
  int install_general(int family, uint32_t mmx_mask, std::string* error);
  void remove_general(int family);

  // Makes `table`'s non-default `family` routes hold what mwan3rtmon copies from the main table:
  //   - every non-default main route through `ifindex` (connected routes, static routes via a gateway);
  //   - every non-default main route through no uplink's device (`other_uplinks` are the devices of the
  //     other uplinks): LAN, VPN and device-less routes such as `unreachable`, so that replies to
  //     connections that came in on this uplink (the iif rule) reach the LAN; fe80::/64 of such devices
  //     excepted, as in mwan3;
  //   - never a route through another uplink's device.
  // Adds the missing copies and removes the copies it added earlier that the main table no longer has.
  // Routes it did not add are left alone (a person's own route in that table); one that blocks a copy
  // (same destination and metric) is reported. Callable on every route change; cheap when nothing
  // changed. Returns 0 or the first negative errno; `error` names the route and table. `added` and
  // `removed`, when given, get the counts.
  int sync_table(uint32_t table, int ifindex, int family, const std::vector<int>& other_uplinks,
                 std::string* error, int* added = nullptr, int* removed = nullptr);
  // Removes the copies sync_table() added to `table` for `family` (mwan3 flushes the table at ifdown).
  void remove_table(uint32_t table, int family);

  void remove_all();

  // A rule and a route copy as this class records them, in the terms the kernel matches them by. Public
  // for the implementation's helpers; not part of the API.
  enum class RuleKind { IifLookup, FwmarkUnreachable, FwmarkBlackhole, FromLookup };
  struct Rule {
    RuleKind kind = RuleKind::IifLookup;
    int family = 0;
    uint32_t pref = 0;
    std::string iif;     // IifLookup
    uint32_t table = 0;  // IifLookup, FromLookup
    uint32_t mark = 0;   // Fwmark*
    uint32_t mask = 0;
    IpAddress source;  // FromLookup: a host address (/32, /128)
    bool operator==(const Rule&) const = default;
  };
  struct Nexthop {
    int ifindex = 0;
    std::optional<IpAddress> gateway;
    uint8_t weight = 0;
    uint32_t flags = 0;  // RTNH_F_ONLINK only
    bool operator==(const Nexthop&) const = default;
  };
  struct Route {
    int family = 0;
    RoutePrefix dst;
    uint8_t tos = 0;
    uint32_t priority = 0;
    uint8_t type = 0;
    uint8_t scope = 0;
    uint8_t protocol = 0;
    std::optional<IpAddress> prefsrc;
    std::vector<Nexthop> nexthops;
    std::vector<std::pair<int, uint32_t>> metrics;  // RTAX_* that are set, in order
    bool operator==(const Route&) const = default;
  };

 private:
  static constexpr uint32_t kGeneralOwner = 0;  // owner of the general rules; uplink ids start at 1
  // Source rules are owned by kSourceOwner | id, so they are diffed apart from the uplink's other rules.
  static constexpr uint32_t kSourceOwner = 0x80000000U;
  struct InstalledRule {
    uint32_t owner = 0;  // uplink id, or kGeneralOwner
    Rule rule;
    bool owned = false;  // false: an identical rule was there before (EEXIST); never deleted
  };
  struct CopiedRoute {
    uint32_t table = 0;
    Route route;
  };

  int apply_rules(uint32_t owner, int family, const std::vector<Rule>& wanted, std::string* error);
  void remove_rules(uint32_t owner, int family);
  void delete_installed(const InstalledRule& installed);
  void retire_unconditional_source_rules(uint32_t id, int family, const std::vector<IpAddress>& addresses);

  std::vector<InstalledRule> rules_;
  // Source rules of the unconditional form already looked for and removed (retire_...), so the
  // refresh every 2 s does not ask the kernel again.
  std::vector<Rule> retired_;
  std::vector<CopiedRoute> routes_;
  ::nl_sock* sock_ = nullptr;
};

}  // namespace uplinkd::netlink
