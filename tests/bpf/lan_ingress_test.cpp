// BPF_PROG_TEST_RUN fixtures for the LAN classifier lan_ingress (tc ingress on LAN devices).
//
// Each fixture is a data row: a description, the setup (uplink records, policies, rules, connected
// networks, sets, and flows / sticky / inbound entries already there), the packets to run with
// the skb->mark each must leave with and the `flows` entry each must leave behind, and the effects
// expected afterwards (rule counters, sticky entries). Adding a case is adding a row to AllCases().
// Properties that need many packets (weights) or a special load (256 rules, strict alignment) are
// plain tests after the rows. Runs as root: loading BPF needs CAP_BPF and CAP_NET_ADMIN.
//
// The skb context: ctx_in carries mark and ingress_ifindex into the run, ctx_out carries the mark
// out (the kernel's SCHED_CLS test run copies both; the src_iface rows fail if it did not).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bpf/lib/flow_hash.h"
#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "packet_builder.h"
#include "rule_tables_helper.h"
#include "test_run.h"
#include "wan_ingress.skel.h"

namespace {

using namespace uplinkd::bpftest;

constexpr uint64_t kSecondNs = 1'000'000'000;

// mwan3's default mask and the marks it gives (../shared/reference/mwan3-behaviour.md section 4).
constexpr uint32_t kMmxMask = 0x3f00;
constexpr uint32_t kDefaultMark = 0x3f00;
constexpr uint32_t kUnreachableMark = 0x3e00;
constexpr uint32_t kBlackholeMark = 0x3d00;
constexpr uint32_t kFlowTimeoutS = 300;

// Uplinks (mwan3 interface ids) and their marks under 0x3f00.
constexpr uint16_t kWan = 1, kWanb = 2, kLte = 3;
constexpr uint32_t mark_of(uint16_t uplink) { return static_cast<uint32_t>(uplink) << 8; }

// A classifier_cfg with one idle timeout for TCP, UDP and the rest (0: never) and UPLINKD_CFG_*
// flags (none: stale TCP flows are classified again, not reset). The rows' loader sets n_rules.
constexpr classifier_cfg cfg_of(uint32_t mmx_mask, uint32_t n_rules, uint32_t timeout_s, uint32_t flags = 0) {
  return classifier_cfg{mmx_mask, n_rules, kDefaultMark, timeout_s, timeout_s, timeout_s, flags, 0};
}

// Policy ids. 0-2 are the builtin use_policy words, as the rule compiler assigns them.
constexpr uint32_t kPolicyDefault = 0, kPolicyUnreachable = 1, kPolicyBlackhole = 2;
constexpr uint32_t kWanOnly = 3;           // wan
constexpr uint32_t kWanbOnly = 4;          // wanb
constexpr uint32_t kLteOnly = 5;           // lte
constexpr uint32_t kAllDeadUnreach = 6;    // no member online, last_resort unreachable
constexpr uint32_t kAllDeadBlackhole = 7;  // ... blackhole
constexpr uint32_t kAllDeadDefault = 8;    // ... default
constexpr uint32_t kWanFirst = 9;          // wan takes every hash; wanb is a member with no share
constexpr uint32_t kDualStack = 10;        // IPv4: wan; IPv6: wanb (members count per family)

// LAN devices (any ifindex works: the test run takes ingress_ifindex as given).
constexpr uint32_t kLanIf = 11, kGuestIf = 12;

constexpr const char* kHostA = "10.0.0.10";
constexpr const char* kHostB = "10.0.0.20";
constexpr const char* kHostA6 = "2001:db8:1::10";
constexpr const char* kWeb = "203.0.113.80";
constexpr const char* kWebHigh = "203.0.113.200";
constexpr const char* kDns = "198.51.100.53";
constexpr const char* kPeer = "203.0.113.7";
constexpr const char* kWeb6 = "2001:db8:ff::80";
constexpr const char* kOther6 = "2001:db8:ee::1";

// ---- addresses and keys -----------------------------------------------------------------------

bool is_v6(const char* addr) { return std::strchr(addr, ':') != nullptr; }

// IPv4 in the first 4 bytes, the rest zero (the map ABI's convention).
void put_addr(const char* text, uint8_t (&out)[16]) {
  std::memset(out, 0, sizeof out);
  if (inet_pton(is_v6(text) ? AF_INET6 : AF_INET, text, out) != 1) {
    throw std::invalid_argument(std::string("bad address ") + text);
  }
}

flow_key make_key(const char* src, const char* dst, uint8_t proto, uint16_t sport, uint16_t dport) {
  flow_key k{};
  put_addr(src, k.saddr);
  put_addr(dst, k.daddr);
  k.sport = htons(sport);
  k.dport = htons(dport);
  k.proto = proto;
  k.family = is_v6(src) ? 6 : 4;
  return k;
}

// "10.0.0.0/8", "2001:db8::/32", or a bare address (a host).
addr_match cidr(const char* text) {
  std::string s(text);
  const size_t slash = s.find('/');
  const std::string addr = s.substr(0, slash);
  addr_match m{};
  put_addr(addr.c_str(), m.addr);
  m.family = is_v6(addr.c_str()) ? 6 : 4;
  m.prefixlen = static_cast<uint8_t>(slash == std::string::npos ? (m.family == 6 ? 128 : 32)
                                                                : std::stoi(s.substr(slash + 1)));
  return m;
}

lpm_key lpm_of(const char* text) {
  const addr_match m = cidr(text);
  lpm_key k{};
  if (m.family == 6) {
    std::memcpy(k.addr, m.addr, 16);
    k.prefixlen = m.prefixlen;
  } else {
    k.addr[10] = 0xff;
    k.addr[11] = 0xff;
    std::memcpy(k.addr + 12, m.addr, 4);
    k.prefixlen = m.prefixlen + 96u;
  }
  return k;
}

uint32_t hash_of(const flow_key& key) {
  uint32_t words[UPLINKD_FLOW_KEY_WORDS];
  std::memcpy(words, &key, sizeof key);
  return flow_hash_words(words);
}

// ---- packets ----------------------------------------------------------------------------------

// A frame and the flow key lan_ingress must file it under.
struct Pkt {
  Bytes frame;
  flow_key key{};
  bool ip = true;  // false: not classified at all (no flow entry, mark untouched)
};

Bytes l3_frame(const char* src, const Bytes& l3, const std::vector<VlanTag>& tags) {
  return ethernet(is_v6(src) ? ETH_P_IPV6 : ETH_P_IP, l3, tags);
}

Bytes ip_packet(const char* src, const char* dst, uint8_t proto, Bytes l4) {
  return is_v6(src) ? ipv6(src, dst, proto, std::move(l4)) : ipv4(src, dst, proto, std::move(l4));
}

Pkt tcp_pkt(const char* src, uint16_t sport, const char* dst, uint16_t dport, uint8_t flags = kTcpSyn,
            const std::vector<VlanTag>& tags = {}) {
  const uint32_t ack = (flags & kTcpAck) != 0 ? 0x1000 : 0;
  return Pkt{l3_frame(src, ip_packet(src, dst, IPPROTO_TCP, tcp(sport, dport, 0x2000, ack, flags)), tags),
             make_key(src, dst, IPPROTO_TCP, sport, dport)};
}

Pkt udp_pkt(const char* src, uint16_t sport, const char* dst, uint16_t dport) {
  return Pkt{l3_frame(src, ip_packet(src, dst, IPPROTO_UDP, udp(sport, dport, Bytes(12, 0x5a))), {}),
             make_key(src, dst, IPPROTO_UDP, sport, dport)};
}

Pkt icmp_pkt(const char* src, const char* dst) {
  const uint8_t proto = is_v6(src) ? uint8_t{IPPROTO_ICMPV6} : uint8_t{IPPROTO_ICMP};
  const uint8_t type = is_v6(src) ? 128 : 8;
  return Pkt{l3_frame(src, ip_packet(src, dst, proto, icmp_echo(type, 1, 1, Bytes(8, 0))), {}),
             make_key(src, dst, proto, 0, 0)};
}

// Any other protocol (GRE here): no ports.
Pkt proto_pkt(const char* src, const char* dst, uint8_t proto) {
  return Pkt{l3_frame(src, ip_packet(src, dst, proto, Bytes(16, 0)), {}), make_key(src, dst, proto, 0, 0)};
}

Pkt arp_pkt() {
  return Pkt{ethernet(ETH_P_ARP, arp_ipv4(1, kGatewayMac, kHostA, Mac{}, "10.0.0.1")), {}, false};
}

// The fragments of one UDP datagram, each with its flow's full key: the first fragment carries the
// ports and files its decision under them; the later ones follow that decision and file none.
std::vector<Pkt> udp_fragments(const char* src, uint16_t sport, const char* dst, uint16_t dport) {
  const Bytes datagram = udp(sport, dport, Bytes(32, 0x33));
  const std::vector<Bytes> pieces = is_v6(src) ? ipv6_fragments(src, dst, IPPROTO_UDP, datagram, 16, 0xabcd)
                                               : ipv4_fragments(src, dst, IPPROTO_UDP, datagram, 16);
  std::vector<Pkt> out;
  out.reserve(pieces.size());
  for (const Bytes& piece : pieces) {
    out.push_back(Pkt{l3_frame(src, piece, {}), make_key(src, dst, IPPROTO_UDP, sport, dport)});
  }
  return out;
}

// IPv6 TCP behind a hop-by-hop header: the ports are still found.
Pkt tcp6_with_hop_by_hop(const char* src, uint16_t sport, const char* dst, uint16_t dport) {
  return Pkt{
      l3_frame(src, ipv6_ext(src, dst, {ipv6_hop_by_hop()}, IPPROTO_TCP, tcp(sport, dport, 1, 0, kTcpSyn)),
               {}),
      make_key(src, dst, IPPROTO_TCP, sport, dport)};
}

// ---- setup vocabulary -------------------------------------------------------------------------

struct UplinkRow {
  uint16_t id;
  uint32_t state = UPLINK_STATE_ONLINE;
  uint32_t generation = 1;
};

std::vector<UplinkRow> default_uplinks() { return {{kWan}, {kWanb}, {kLte}}; }

struct Member {
  uint16_t uplink;
  uint64_t weight;
};

// The daemon's pick table (loader/policy/policy_table.cpp): member i takes the hashes up to and
// including ceil(cumulative_i * 2^32 / total) - 1.
policy_entry members_entry(const std::vector<Member>& members) {
  policy_entry p{};
  uint64_t total = 0, cumulative = 0;
  for (const Member& m : members) {
    total += m.weight;
  }
  p.n_members = static_cast<uint32_t>(members.size());
  for (size_t i = 0; i < members.size(); i++) {
    cumulative += members[i].weight;
    const unsigned __int128 scaled = (static_cast<unsigned __int128>(cumulative) << 32) + total - 1;
    p.threshold[i] = static_cast<uint32_t>(static_cast<uint64_t>(scaled / total) - 1);
    p.mark[i] = mark_of(members[i].uplink);
    p.uplink_id[i] = members[i].uplink;
  }
  return p;
}

policy_entry last_resort_entry(uint32_t mark) {
  policy_entry p{};
  p.fallback_mark = mark;
  return p;
}

struct PolicyRow {
  uint32_t id;
  policy_entry v4;
  policy_entry v6;
};

PolicyRow both_families(uint32_t id, const policy_entry& p) { return PolicyRow{id, p, p}; }

std::vector<PolicyRow> default_policies() {
  policy_entry wan_first = members_entry({{kWan, 1}, {kWanb, 1}});
  wan_first.threshold[0] = 0xffffffffu;  // wan takes every hash; wanb stays a member
  return {
      both_families(kPolicyDefault, last_resort_entry(kDefaultMark)),
      both_families(kPolicyUnreachable, last_resort_entry(kUnreachableMark)),
      both_families(kPolicyBlackhole, last_resort_entry(kBlackholeMark)),
      both_families(kWanOnly, members_entry({{kWan, 1}})),
      both_families(kWanbOnly, members_entry({{kWanb, 1}})),
      both_families(kLteOnly, members_entry({{kLte, 1}})),
      both_families(kAllDeadUnreach, last_resort_entry(kUnreachableMark)),
      both_families(kAllDeadBlackhole, last_resort_entry(kBlackholeMark)),
      both_families(kAllDeadDefault, last_resort_entry(kDefaultMark)),
      both_families(kWanFirst, wan_first),
      PolicyRow{kDualStack, members_entry({{kWan, 1}}), members_entry({{kWanb, 1}})},
  };
}

// A rule, field by field: R(kWanOnly).proto(IPPROTO_TCP).dport({{443, 443}}).
class R {
 public:
  explicit R(uint32_t policy) {
    e_.policy_id = policy;
    e_.sticky_timeout_s = 600;
  }
  R& family(uint8_t f) {
    e_.family = f;
    return *this;
  }
  R& proto(uint8_t p) {
    e_.proto = p;
    return *this;
  }
  R& src(std::initializer_list<const char*> cidrs) {
    for (const char* c : cidrs) {
      e_.src[e_.n_src++] = cidr(c);
    }
    return *this;
  }
  R& dst(std::initializer_list<const char*> cidrs) {
    for (const char* c : cidrs) {
      e_.dst[e_.n_dst++] = cidr(c);
    }
    return *this;
  }
  R& sport(std::initializer_list<port_range> ranges) {
    for (const port_range& r : ranges) {
      e_.sport[e_.n_sport++] = r;
    }
    return *this;
  }
  R& dport(std::initializer_list<port_range> ranges) {
    for (const port_range& r : ranges) {
      e_.dport[e_.n_dport++] = r;
    }
    return *this;
  }
  R& iface(uint32_t ifindex) {
    e_.src_ifindex = ifindex;
    return *this;
  }
  R& set(uint8_t id) {
    e_.set_id = id;
    return *this;
  }
  R& sticky(uint32_t timeout_s = 600) {
    e_.sticky = 1;
    e_.sticky_timeout_s = timeout_s;
    return *this;
  }
  operator rule_entry() const { return e_; }  // NOLINT(google-explicit-constructor): rows read better

 private:
  rule_entry e_{};
};

struct SetRow {
  uint8_t id;
  std::vector<const char*> cidrs;
};

struct FlowRow {
  flow_key key;
  uint16_t uplink;
  uint32_t generation = 1;
  uint8_t origin = FLOW_ORIGIN_RULE;
  uint16_t rule_id = 1;
  uint64_t age_ns = 5 * kSecondNs;
  std::optional<uint32_t> mark;  // default: the uplink's
};

struct StickyRow {
  const char* src;
  uint32_t rule_id;
  uint16_t uplink;
  uint32_t generation = 1;
  uint64_t age_ns = 10 * kSecondNs;
};

struct InboundRow {
  const char* raddr;
  uint16_t rport;
  uint8_t proto;
  uint16_t uplink;
  uint64_t age_ns = 5 * kSecondNs;
};

// ---- expectations -----------------------------------------------------------------------------

enum class Stamp { Now, Kept };  // last_seen after the step: written by it, or left as it was

struct FlowExpect {
  uint8_t origin;
  uint16_t uplink = 0;
  uint16_t rule_id = 0;
  uint32_t generation = 0;
  uint32_t mark = 0;
  Stamp stamp = Stamp::Now;
};

FlowExpect by_rule(uint16_t rule_id, uint16_t uplink, uint32_t generation = 1) {
  return FlowExpect{FLOW_ORIGIN_RULE, uplink, rule_id, generation, mark_of(uplink)};
}
FlowExpect by_last_resort(uint16_t rule_id, uint32_t mark) {
  return FlowExpect{FLOW_ORIGIN_RULE, 0, rule_id, 0, mark};
}
FlowExpect connected_flow() { return FlowExpect{FLOW_ORIGIN_CONNECTED, 0, 0, 0, kDefaultMark}; }
FlowExpect inbound_flow(uint16_t uplink, uint32_t generation = 1) {
  return FlowExpect{FLOW_ORIGIN_INBOUND, uplink, 0, generation, mark_of(uplink)};
}
FlowExpect unmatched_flow() { return FlowExpect{FLOW_ORIGIN_UNMATCHED}; }
FlowExpect kept(FlowExpect f) {
  f.stamp = Stamp::Kept;
  return f;
}

struct Step {
  Pkt pkt;
  uint32_t mark_out;               // skb->mark after the run
  std::optional<FlowExpect> flow;  // the entry under pkt.key afterwards; nullopt for non-IP
  uint32_t ifindex = kLanIf;
  uint32_t mark_in = 0;
};

// A packet classified to `uplink` by rule `rule_id`, arriving with no mark.
Step to(Pkt p, uint16_t uplink, uint16_t rule_id, uint32_t generation = 1) {
  return Step{std::move(p), mark_of(uplink), by_rule(rule_id, uplink, generation)};
}

struct RuleCount {
  uint32_t index;  // rules[index]
  uint64_t packets;
};

struct StickyExpect {
  const char* src;
  uint32_t rule_id;
  uint16_t uplink;
  uint32_t generation = 1;
  Stamp stamp = Stamp::Now;
};

struct Case {
  const char* name;
  const char* description;
  bool l3_only = false;
  classifier_cfg cfg = cfg_of(kMmxMask, 0, kFlowTimeoutS);  // n_rules: rules.size() unless set
  std::optional<uint32_t> n_rules;
  std::vector<UplinkRow> uplinks = default_uplinks();
  std::vector<rule_entry> rules;
  std::vector<const char*> connected;
  std::vector<SetRow> sets;
  std::vector<FlowRow> flows;
  std::vector<StickyRow> sticky;
  std::vector<InboundRow> inbound;
  std::vector<Step> steps;
  std::vector<RuleCount> counters;  // every rule not listed must count 0
  std::vector<StickyExpect> sticky_after;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name << ": " << c.description; }

std::vector<Case> AllCases() {
  const VlanTag q{ETH_P_8021Q, 100}, ad{ETH_P_8021AD, 200};
  const std::vector<Pkt> frags4 = udp_fragments(kHostA, 5000, kWeb, 443);
  const std::vector<Pkt> frags6 = udp_fragments(kHostA6, 5000, kWeb6, 443);

  return {
      // ---- rule fields ----
      {.name = "FamilyIpv6RuleSkipsIpv4",
       .description = "a family ipv6 rule never matches IPv4; the next (ipv4) rule does",
       .rules = {R(kWanbOnly).family(6), R(kWanOnly).family(4)},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 2)},
       .counters = {{1, 1}}},
      {.name = "FamilyIpv6RuleMatchesIpv6",
       .description = "the same rules: IPv6 takes the first",
       .rules = {R(kWanbOnly).family(6), R(kWanOnly).family(4)},
       .steps = {to(tcp_pkt(kHostA6, 40000, kWeb6, 443), kWanb, 1)},
       .counters = {{0, 1}}},
      {.name = "ProtoUdpRule",
       .description = "proto udp matches UDP only; TCP and ICMP fall through",
       .rules = {R(kWanbOnly).proto(IPPROTO_UDP), R(kWanOnly)},
       .steps = {to(udp_pkt(kHostA, 40000, kDns, 53), kWanb, 1),
                 to(tcp_pkt(kHostA, 40000, kDns, 53), kWan, 2), to(icmp_pkt(kHostA, kDns), kWan, 2)},
       .counters = {{0, 1}, {1, 2}}},
      {.name = "OtherProtocolNumber",
       .description = "proto 47 (GRE) matches by number; its flow has no ports",
       .rules = {R(kWanbOnly).proto(47), R(kWanOnly)},
       .steps = {to(proto_pkt(kHostA, kWeb, 47), kWanb, 1), to(proto_pkt(kHostA, kWeb, 50), kWan, 2)},
       .counters = {{0, 1}, {1, 1}}},
      {.name = "SrcIpCidrList",
       .description = "src_ip list of CIDRs: any entry covering the source matches",
       .rules = {R(kWanbOnly).src({"10.0.1.0/24", "10.0.0.8/29"}), R(kWanOnly)},
       .steps = {to(tcp_pkt("10.0.0.10", 40000, kWeb, 443), kWanb, 1),
                 to(tcp_pkt("10.0.0.20", 40000, kWeb, 443), kWan, 2),
                 to(tcp_pkt("10.0.1.77", 40000, kWeb, 443), kWanb, 1),
                 to(tcp_pkt("10.0.2.1", 40000, kWeb, 443), kWan, 2)},
       .counters = {{0, 2}, {1, 2}}},
      {.name = "DestIpCidrList",
       .description = "dest_ip list of CIDRs, /24 and /25",
       .rules = {R(kWanbOnly).dst({"198.51.100.0/24", "203.0.113.128/25"}), R(kWanOnly)},
       .steps = {to(tcp_pkt(kHostA, 40000, kDns, 443), kWanb, 1),
                 to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 2),
                 to(tcp_pkt(kHostA, 40000, kWebHigh, 443), kWanb, 1)},
       .counters = {{0, 2}, {1, 1}}},
      {.name = "DestIpHostAndZeroPrefix",
       .description = "a /32 host matches only itself; 0.0.0.0/0 matches every IPv4 address but no IPv6",
       .rules = {R(kWanbOnly).dst({"203.0.113.80"}), R(kLteOnly).dst({"0.0.0.0/0"}), R(kWanOnly)},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWanb, 1),
                 to(tcp_pkt(kHostA, 40000, "203.0.113.81", 443), kLte, 2),
                 to(tcp_pkt(kHostA6, 40000, kWeb6, 443), kWan, 3)},
       .counters = {{0, 1}, {1, 1}, {2, 1}}},
      {.name = "SrcPortListAndRange",
       .description = "src_port 1000,2000-2999: both ends of the range inclusive",
       .rules = {R(kWanbOnly).proto(IPPROTO_TCP).sport({{1000, 1000}, {2000, 2999}}), R(kWanOnly)},
       .steps = {to(tcp_pkt(kHostA, 1000, kWeb, 80), kWanb, 1), to(tcp_pkt(kHostA, 2000, kWeb, 80), kWanb, 1),
                 to(tcp_pkt(kHostA, 2999, kWeb, 80), kWanb, 1), to(tcp_pkt(kHostA, 3000, kWeb, 80), kWan, 2),
                 to(tcp_pkt(kHostA, 999, kWeb, 80), kWan, 2)},
       .counters = {{0, 3}, {1, 2}}},
      {.name = "DestPortListAndRange",
       .description = "dest_port 80,443,8000-8999 on TCP and UDP; ICMP never matches a port rule",
       .rules = {R(kWanbOnly).dport({{80, 80}, {443, 443}, {8000, 8999}}), R(kWanOnly)},
       .steps = {to(udp_pkt(kHostA, 40000, kWeb, 443), kWanb, 1),
                 to(tcp_pkt(kHostA, 40000, kWeb, 8080), kWanb, 1),
                 to(tcp_pkt(kHostA, 40000, kWeb, 80), kWanb, 1),
                 to(tcp_pkt(kHostA, 40000, kWeb, 22), kWan, 2), to(icmp_pkt(kHostA, kWeb), kWan, 2)},
       .counters = {{0, 3}, {1, 2}}},
      {.name = "SrcIface",
       .description = "src_iface: the skb's ingress_ifindex (from ctx_in) selects the rule",
       .rules = {R(kWanbOnly).iface(kGuestIf), R(kWanOnly)},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443), mark_of(kWanb), by_rule(1, kWanb), kGuestIf},
                 Step{tcp_pkt(kHostA, 40001, kWeb, 443), mark_of(kWan), by_rule(2, kWan), kLanIf}},
       .counters = {{0, 1}, {1, 1}}},
      {.name = "SrcIfaceUnresolved",
       .description = "src_ifindex 0xFFFFFFFF (device missing) matches no packet",
       .rules = {R(kWanbOnly).iface(0xffffffffu), R(kWanOnly)},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 2)},
       .counters = {{1, 1}}},
      {.name = "IpsetDestination",
       .description = "ipset: the destination must be in set 1 (an LPM trie holding both families)",
       .rules = {R(kWanbOnly).set(1), R(kWanOnly)},
       .sets = {{1, {"198.51.100.0/24", "2001:db8:ff::/48"}}},
       .steps = {to(tcp_pkt(kHostA, 40000, kDns, 443), kWanb, 1),
                 to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 2),
                 to(tcp_pkt(kHostA6, 40000, kWeb6, 443), kWanb, 1),
                 to(tcp_pkt(kHostA6, 40000, kOther6, 443), kWan, 2)},
       .counters = {{0, 2}, {1, 2}}},
      {.name = "IpsetMissingSet",
       .description = "a rule naming a set the daemon has not loaded matches nothing",
       .rules = {R(kWanbOnly).set(2), R(kWanOnly)},
       .sets = {{1, {"0.0.0.0/0"}}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 2)},
       .counters = {{1, 1}}},
      {.name = "AllFieldsTogether",
       .description =
           "family, proto, src, dst, ports, iface and set all required: one off and it falls through",
       .rules = {R(kWanbOnly)
                     .family(4)
                     .proto(IPPROTO_TCP)
                     .src({"10.0.0.0/24"})
                     .dst({"203.0.113.0/24"})
                     .sport({{40000, 40100}})
                     .dport({{443, 443}})
                     .iface(kGuestIf)
                     .set(1),
                 R(kWanOnly)},
       .sets = {{1, {"203.0.113.64/26"}}},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443), mark_of(kWanb), by_rule(1, kWanb), kGuestIf},
                 Step{tcp_pkt(kHostA, 40001, kWeb, 443), mark_of(kWan), by_rule(2, kWan), kLanIf},
                 Step{tcp_pkt("10.0.1.10", 40000, kWeb, 443), mark_of(kWan), by_rule(2, kWan), kGuestIf},
                 Step{tcp_pkt(kHostA, 40000, "203.0.113.10", 443), mark_of(kWan), by_rule(2, kWan), kGuestIf},
                 Step{tcp_pkt(kHostA, 40200, kWeb, 443), mark_of(kWan), by_rule(2, kWan), kGuestIf},
                 Step{tcp_pkt(kHostA, 40002, kWeb, 444), mark_of(kWan), by_rule(2, kWan), kGuestIf},
                 Step{udp_pkt(kHostA, 40003, kWeb, 443), mark_of(kWan), by_rule(2, kWan), kGuestIf}},
       .counters = {{0, 1}, {1, 6}}},
      {.name = "FirstMatchWins",
       .description = "three rules match; only the first counts and decides",
       .rules = {R(kWanbOnly).dport({{443, 443}}), R(kWanOnly).dport({{443, 443}}), R(kLteOnly)},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWanb, 1),
                 to(tcp_pkt(kHostA, 40000, kWeb, 80), kLte, 3)},
       .counters = {{0, 1}, {2, 1}}},
      {.name = "NRulesBoundsTheList",
       .description = "rules past classifier_cfg.n_rules are not live",
       .n_rules = 1,
       .rules = {R(kWanbOnly).dport({{443, 443}}), R(kWanOnly)},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 80), 0, unmatched_flow()}}},
      {.name = "NoRules",
       .description = "an empty rule list leaves every flow unmarked",
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443), 0, unmatched_flow()}}},
      {.name = "UnmatchedLeavesMarkAlone",
       .description = "no rule matched: mark 0, the skb's own mark bits untouched (mwan3 leaves it unmarked)",
       .rules = {R(kWanOnly).dport({{443, 443}})},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 80), 0x3a12, unmatched_flow(), kLanIf, 0x3a12}}},

      // ---- connected networks ----
      {.name = "ConnectedBypass",
       .description = "destinations in connected networks get MMX_DEFAULT before any rule is tried",
       .rules = {R(kWanOnly)},
       .connected = {"198.51.100.0/24", "10.0.0.0/8", "2001:db8:1::/64"},
       .steps = {Step{tcp_pkt(kHostA, 40000, kDns, 53), kDefaultMark, connected_flow()},
                 Step{tcp_pkt(kHostA, 40000, kHostB, 22), kDefaultMark, connected_flow()},
                 Step{tcp_pkt(kHostA6, 40000, "2001:db8:1::20", 22), kDefaultMark, connected_flow()},
                 to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 1)},
       .counters = {{0, 1}}},

      // ---- policies ----
      {.name = "LastResortUnreachable",
       .description = "no member online, last_resort unreachable: the unreachable mark, no uplink",
       .rules = {R(kAllDeadUnreach)},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443), kUnreachableMark,
                      by_last_resort(1, kUnreachableMark)}},
       .counters = {{0, 1}}},
      {.name = "LastResortBlackhole",
       .description = "no member online, last_resort blackhole",
       .rules = {R(kAllDeadBlackhole)},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443), kBlackholeMark, by_last_resort(1, kBlackholeMark)}},
       .counters = {{0, 1}}},
      {.name = "LastResortDefault",
       .description = "no member online, last_resort default: MMX_DEFAULT (main table)",
       .rules = {R(kAllDeadDefault)},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443), kDefaultMark, by_last_resort(1, kDefaultMark)}},
       .counters = {{0, 1}}},
      {.name = "BuiltinUsePolicies",
       .description = "use_policy default / unreachable / blackhole: reserved policy ids 0-2",
       .rules = {R(kPolicyDefault).dport({{1, 1}}), R(kPolicyUnreachable).dport({{2, 2}}),
                 R(kPolicyBlackhole).dport({{3, 3}})},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 1), kDefaultMark, by_last_resort(1, kDefaultMark)},
                 Step{tcp_pkt(kHostA, 40000, kWeb, 2), kUnreachableMark, by_last_resort(2, kUnreachableMark)},
                 Step{tcp_pkt(kHostA, 40000, kWeb, 3), kBlackholeMark, by_last_resort(3, kBlackholeMark)}},
       .counters = {{0, 1}, {1, 1}, {2, 1}}},
      {.name = "PolicyPerFamily",
       .description = "a family-any rule: IPv4 flows use the policy's IPv4 members, IPv6 its IPv6 members",
       .rules = {R(kDualStack)},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 1),
                 to(tcp_pkt(kHostA6, 40000, kWeb6, 443), kWanb, 1)},
       .counters = {{0, 2}}},
      {.name = "GenerationStored",
       .description = "the flow stores its uplink's generation at decision time",
       .uplinks = {{kWan, UPLINK_STATE_ONLINE, 7}, {kWanb}},
       .rules = {R(kWanOnly)},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 1, 7)},
       .counters = {{0, 1}}},

      // ---- sticky ----
      {.name = "StickyFirstPickStored",
       .description = "a sticky rule's pick is stored per (source, rule) with the uplink's generation",
       .uplinks = {{kWan, UPLINK_STATE_ONLINE, 4}, {kWanb}},
       .rules = {R(kWanFirst).sticky()},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 1, 4)},
       .counters = {{0, 1}},
       .sticky_after = {{kHostA, 1, kWan, 4}}},
      {.name = "StickyReused",
       .description = "a fresh sticky entry wins over the hash (which would say wan)",
       .rules = {R(kWanFirst).sticky()},
       .sticky = {{kHostA, 1, kWanb}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWanb, 1),
                 to(tcp_pkt(kHostA, 40001, kDns, 53), kWanb, 1)},
       .counters = {{0, 2}},
       .sticky_after = {{kHostA, 1, kWanb}}},
      {.name = "StickyOtherSourceUnaffected",
       .description = "sticky entries are per source address",
       .rules = {R(kWanFirst).sticky()},
       .sticky = {{kHostA, 1, kWanb}},
       .steps = {to(tcp_pkt(kHostB, 40000, kWeb, 443), kWan, 1)},
       .counters = {{0, 1}},
       .sticky_after = {{kHostA, 1, kWanb, 1, Stamp::Kept}, {kHostB, 1, kWan}}},
      {.name = "StickyPerRule",
       .description = "an entry of rule 2 does not steer rule 1",
       .rules = {R(kWanFirst).sticky(), R(kWanFirst).sticky()},
       .sticky = {{kHostA, 2, kWanb}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 1)},
       .counters = {{0, 1}},
       .sticky_after = {{kHostA, 1, kWan}, {kHostA, 2, kWanb, 1, Stamp::Kept}}},
      {.name = "StickyExpired",
       .description = "an entry older than the rule's timeout is picked afresh and overwritten",
       // Short timeout and age: a stamp cannot predate boot, and CI may run soon after one.
       .rules = {R(kWanFirst).sticky(2)},
       .sticky = {{kHostA, 1, kWanb, 1, 3 * kSecondNs}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 1)},
       .counters = {{0, 1}},
       .sticky_after = {{kHostA, 1, kWan}}},
      {.name = "StickyUplinkWentDown",
       .description = "the sticky uplink's generation moved on (it went down and came back): not reused",
       .uplinks = {{kWan}, {kWanb, UPLINK_STATE_ONLINE, 2}},
       .rules = {R(kWanFirst).sticky()},
       .sticky = {{kHostA, 1, kWanb, 1}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 1)},
       .counters = {{0, 1}},
       .sticky_after = {{kHostA, 1, kWan}}},
      {.name = "StickyUplinkOffline",
       .description = "the sticky uplink is offline: not reused",
       .uplinks = {{kWan}, {kWanb, UPLINK_STATE_OFFLINE, 1}},
       .rules = {R(kWanFirst).sticky()},
       .sticky = {{kHostA, 1, kWanb}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 1)},
       .counters = {{0, 1}},
       .sticky_after = {{kHostA, 1, kWan}}},
      {.name = "StickyUplinkDisconnecting",
       .description = "disconnecting still counts as usable (mwan3 uses an uplink until it is offline)",
       .uplinks = {{kWan}, {kWanb, UPLINK_STATE_DISCONNECTING, 1}},
       .rules = {R(kWanFirst).sticky()},
       .sticky = {{kHostA, 1, kWanb}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWanb, 1)},
       .counters = {{0, 1}},
       .sticky_after = {{kHostA, 1, kWanb}}},
      {.name = "StickyUplinkLeftPolicy",
       .description = "the sticky uplink is no longer a member of the policy (a lower metric came back)",
       .rules = {R(kWanOnly).sticky()},
       .sticky = {{kHostA, 1, kWanb}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 1)},
       .counters = {{0, 1}},
       .sticky_after = {{kHostA, 1, kWan}}},
      {.name = "StickyLastResortStoresNothing",
       .description = "no member online: last_resort, and no sticky entry is written",
       .rules = {R(kAllDeadUnreach).sticky()},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443), kUnreachableMark,
                      by_last_resort(1, kUnreachableMark)}},
       .counters = {{0, 1}}},
      {.name = "StickyIpv6",
       .description = "sticky reuse keyed by an IPv6 source",
       .rules = {R(kWanFirst).sticky()},
       .sticky = {{kHostA6, 1, kWanb}},
       .steps = {to(tcp_pkt(kHostA6, 40000, kWeb6, 443), kWanb, 1)},
       .counters = {{0, 1}},
       .sticky_after = {{kHostA6, 1, kWanb}}},

      // ---- flows ----
      {.name = "FlowHitReusesDecision",
       .description =
           "a known flow keeps its decision without classifying (counters stay 0); stamp refreshed",
       .rules = {R(kWanOnly)},
       .flows = {{tcp_pkt(kHostA, 40000, kWeb, 443).key, kWanb}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), kWanb, 1)}},
      {.name = "FlowHitStampAtMostOncePerSecond",
       .description = "an entry stamped less than a second ago is not written again",
       .rules = {R(kWanOnly)},
       .flows = {{.key = tcp_pkt(kHostA, 40000, kWeb, 443).key, .uplink = kWanb, .age_ns = kSecondNs / 5}},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), mark_of(kWanb), kept(by_rule(1, kWanb))}}},
      {.name = "FlowHitStampJustBeforeTheStepKept",
       .description = "stamped 0.9 s ago (the step is 1 s, on the coarse clock): not written again",
       .rules = {R(kWanOnly)},
       .flows = {{.key = tcp_pkt(kHostA, 40000, kWeb, 443).key,
                  .uplink = kWanb,
                  .age_ns = kSecondNs * 9 / 10}},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), mark_of(kWanb), kept(by_rule(1, kWanb))}}},
      {.name = "FlowHitStampJustAfterTheStepRefreshed",
       .description = "stamped 1.1 s ago: the step has passed, the stamp moves to now",
       .rules = {R(kWanOnly)},
       .flows = {{.key = tcp_pkt(kHostA, 40000, kWeb, 443).key,
                  .uplink = kWanb,
                  .age_ns = kSecondNs * 11 / 10}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), kWanb, 1)}},
      {.name = "FlowIdleJustPastTimeout",
       .description = "flow_timeout_s 2, stamped 2.1 s ago on the coarse clock's scale: classified again",
       .cfg = cfg_of(kMmxMask, 0, 2),
       .rules = {R(kWanOnly)},
       .flows = {{.key = tcp_pkt(kHostA, 40000, kWeb, 443).key,
                  .uplink = kWanb,
                  .age_ns = kSecondNs * 21 / 10}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), kWan, 1)},
       .counters = {{0, 1}}},
      {.name = "FlowJustInsideTimeoutHolds",
       .description = "flow_timeout_s 2, stamped 1.9 s ago: still held (and its stamp refreshed)",
       .cfg = cfg_of(kMmxMask, 0, 2),
       .rules = {R(kWanOnly)},
       .flows = {{.key = tcp_pkt(kHostA, 40000, kWeb, 443).key,
                  .uplink = kWanb,
                  .age_ns = kSecondNs * 19 / 10}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), kWanb, 1)}},
      {.name = "FlowSecondPacketHits",
       .description = "the first packet decides, the second reuses it: the rule counts once",
       .rules = {R(kWanOnly)},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443), kWan, 1),
                 Step{tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), mark_of(kWan), kept(by_rule(1, kWan))}},
       .counters = {{0, 1}}},
      {.name = "FlowStaleUplinkOffline",
       .description = "the flow's uplink went offline: classified again",
       .uplinks = {{kWan}, {kWanb, UPLINK_STATE_OFFLINE, 1}},
       .rules = {R(kWanOnly)},
       .flows = {{tcp_pkt(kHostA, 40000, kWeb, 443).key, kWanb}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), kWan, 1)},
       .counters = {{0, 1}}},
      {.name = "FlowStaleGenerationMoved",
       .description = "the flow's uplink went down and came back (generation 1 -> 2): classified again",
       .uplinks = {{kWan}, {kWanb, UPLINK_STATE_ONLINE, 2}},
       .rules = {R(kWanbOnly)},
       .flows = {{tcp_pkt(kHostA, 40000, kWeb, 443).key, kWanb, 1}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), kWanb, 1, 2)},
       .counters = {{0, 1}}},
      {.name = "FlowDisconnectingKept",
       .description = "a disconnecting uplink keeps its flows",
       .uplinks = {{kWan}, {kWanb, UPLINK_STATE_DISCONNECTING, 1}},
       .rules = {R(kWanOnly)},
       .flows = {{tcp_pkt(kHostA, 40000, kWeb, 443).key, kWanb}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), kWanb, 1)}},
      {.name = "FlowIdleTimeout",
       .description = "a flow idle longer than flow_timeout_s is classified again",
       .cfg = cfg_of(kMmxMask, 0, 2),
       .rules = {R(kWanOnly)},
       .flows = {{.key = tcp_pkt(kHostA, 40000, kWeb, 443).key, .uplink = kWanb, .age_ns = 3 * kSecondNs}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), kWan, 1)},
       .counters = {{0, 1}}},
      {.name = "FlowTimeoutZeroNeverExpires",
       .description = "flow_timeout_s 0: an entry a day old still holds",
       .cfg = cfg_of(kMmxMask, 0, 0),
       .rules = {R(kWanOnly)},
       .flows = {{.key = tcp_pkt(kHostA, 40000, kWeb, 443).key,
                  .uplink = kWanb,
                  .age_ns = 86400 * kSecondNs}},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443, kTcpAck), kWanb, 1)}},
      {.name = "FlowWithoutUplinkHolds",
       .description =
           "connected and last_resort decisions name no uplink: no uplink state can make them stale",
       .uplinks = {},
       .rules = {R(kWanOnly)},
       .flows = {{.key = tcp_pkt(kHostA, 40000, kDns, 53).key,
                  .uplink = 0,
                  .generation = 0,
                  .origin = FLOW_ORIGIN_CONNECTED,
                  .rule_id = 0,
                  .mark = kDefaultMark}},
       .steps = {Step{tcp_pkt(kHostA, 40000, kDns, 53, kTcpAck), kDefaultMark, connected_flow()}}},

      // ---- inbound ----
      {.name = "InboundReplyMarked",
       .description =
           "a LAN server's SYN-ACK to a remote that came in on lte leaves by lte, whatever the rules",
       .uplinks = {{kWan}, {kWanb}, {kLte, UPLINK_STATE_ONLINE, 3}},
       .rules = {R(kWanOnly)},
       .inbound = {{kPeer, 51000, IPPROTO_TCP, kLte}},
       .steps = {Step{tcp_pkt(kHostA, 22, kPeer, 51000, kTcpSyn | kTcpAck), mark_of(kLte),
                      inbound_flow(kLte, 3)}}},
      {.name = "InboundIgnoresLanSyn",
       .description = "a LAN host opening a connection to that same endpoint is not a reply: rules decide",
       .rules = {R(kWanOnly)},
       .inbound = {{kPeer, 51000, IPPROTO_TCP, kLte}},
       .steps = {to(tcp_pkt(kHostA, 40000, kPeer, 51000), kWan, 1)},
       .counters = {{0, 1}}},
      {.name = "InboundOldTcpStillHolds",
       .description = "a TCP endpoint is stamped by its SYN only: an hour-old one still steers the replies",
       .rules = {R(kWanOnly)},
       .inbound = {{kPeer, 51000, IPPROTO_TCP, kLte, 3600 * kSecondNs}},
       .steps = {Step{tcp_pkt(kHostA, 22, kPeer, 51000, kTcpAck), mark_of(kLte), inbound_flow(kLte)}}},
      {.name = "InboundUdp",
       .description = "UDP reply of a datagram that came in on wanb",
       .rules = {R(kWanOnly)},
       .inbound = {{kPeer, 5060, IPPROTO_UDP, kWanb}},
       .steps = {Step{udp_pkt(kHostA, 5060, kPeer, 5060), mark_of(kWanb), inbound_flow(kWanb)}}},
      {.name = "InboundUdpIdle",
       .description = "a UDP endpoint idle longer than flow_timeout_s no longer steers",
       .cfg = cfg_of(kMmxMask, 0, 2),
       .rules = {R(kWanOnly)},
       .inbound = {{kPeer, 5060, IPPROTO_UDP, kWanb, 3 * kSecondNs}},
       .steps = {to(udp_pkt(kHostA, 5060, kPeer, 5060), kWan, 1)},
       .counters = {{0, 1}}},
      {.name = "InboundUplinkOffline",
       .description = "the uplink it came in on is offline: decided like any other flow",
       .uplinks = {{kWan}, {kWanb}, {kLte, UPLINK_STATE_OFFLINE, 1}},
       .rules = {R(kWanOnly)},
       .inbound = {{kPeer, 51000, IPPROTO_TCP, kLte}},
       .steps = {to(tcp_pkt(kHostA, 22, kPeer, 51000, kTcpSyn | kTcpAck), kWan, 1)},
       .counters = {{0, 1}}},
      {.name = "InboundOtherPortUnaffected",
       .description =
           "the key is the remote's address and port: another port of the same host is not inbound",
       .rules = {R(kWanOnly)},
       .inbound = {{kPeer, 51000, IPPROTO_TCP, kLte}},
       .steps = {to(tcp_pkt(kHostA, 22, kPeer, 51001, kTcpSyn | kTcpAck), kWan, 1)},
       .counters = {{0, 1}}},
      {.name = "InboundIpv6",
       .description = "IPv6 port forward reply",
       .rules = {R(kWanOnly)},
       .inbound = {{kOther6, 443, IPPROTO_TCP, kWanb}},
       .steps = {Step{tcp_pkt(kHostA6, 8443, kOther6, 443, kTcpSyn | kTcpAck), mark_of(kWanb),
                      inbound_flow(kWanb)}}},

      // ---- parsing ----
      {.name = "Ipv4Fragments",
       .description = "the first IPv4 fragment is decided by its ports (the port rule matches), the second "
                      "takes its mark without a flow of its own (more in lan_ingress_frag_test.cpp)",
       .rules = {R(kWanbOnly).dport({{443, 443}}), R(kWanOnly).proto(IPPROTO_UDP)},
       .steps = {to(frags4[0], kWanb, 1), Step{frags4[1], mark_of(kWanb), kept(by_rule(1, kWanb))}},
       .counters = {{0, 1}}},
      {.name = "Ipv6Fragments",
       .description =
           "behind an IPv6 fragment header: the datagram's protocol and the first fragment's ports, "
           "one decision",
       .rules = {R(kWanbOnly).dport({{443, 443}}), R(kWanOnly).proto(IPPROTO_UDP)},
       .steps = {to(frags6[0], kWanb, 1), Step{frags6[1], mark_of(kWanb), kept(by_rule(1, kWanb))}},
       .counters = {{0, 1}}},
      {.name = "Ipv6ExtensionHeader",
       .description = "TCP behind a hop-by-hop header: ports found, the port rule matches",
       .rules = {R(kWanbOnly).proto(IPPROTO_TCP).dport({{443, 443}}), R(kWanOnly)},
       .steps = {to(tcp6_with_hop_by_hop(kHostA6, 40000, kWeb6, 443), kWanb, 1)},
       .counters = {{0, 1}}},
      {.name = "VlanTags",
       .description = "802.1Q and QinQ frames are classified from the inner header",
       .rules = {R(kWanbOnly).dport({{443, 443}}), R(kWanOnly)},
       .steps = {to(tcp_pkt(kHostA, 40000, kWeb, 443, kTcpSyn, {q}), kWanb, 1),
                 to(tcp_pkt(kHostA, 40001, kWeb, 80, kTcpSyn, {ad, q}), kWan, 2)},
       .counters = {{0, 1}, {1, 1}}},
      {.name = "L3OnlyDevice",
       .description = "an instance for a device without link layer parses from the IP header",
       .l3_only = true,
       .rules = {R(kWanbOnly).dport({{443, 443}})},
       .steps = {Step{Pkt{ipv4(kHostA, kWeb, IPPROTO_TCP, tcp(40000, 443, 1, 0, kTcpSyn)),
                          make_key(kHostA, kWeb, IPPROTO_TCP, 40000, 443)},
                      mark_of(kWanb), by_rule(1, kWanb)},
                 Step{Pkt{ipv6(kHostA6, kWeb6, IPPROTO_TCP, tcp(40000, 443, 1, 0, kTcpSyn)),
                          make_key(kHostA6, kWeb6, IPPROTO_TCP, 40000, 443)},
                      mark_of(kWanb), by_rule(1, kWanb)}},
       .counters = {{0, 2}}},
      {.name = "NonIpUntouched",
       .description = "ARP, and IPv4 headers that are not (version 5, total length below the header), pass "
                      "with their mark and leave no flow",
       .rules = {R(kWanOnly)},
       .steps = {Step{arp_pkt(), 0x1234, std::nullopt, kLanIf, 0x1234},
                 Step{Pkt{ethernet(ETH_P_IP,
                                   ipv4(kHostA, kWeb, IPPROTO_TCP, tcp(1, 2, 3, 4, kTcpSyn), {.version = 5})),
                          {},
                          false},
                      0x1234, std::nullopt, kLanIf, 0x1234},
                 Step{Pkt{ethernet(ETH_P_IP, ipv4(kHostA, kWeb, IPPROTO_TCP, tcp(1, 2, 3, 4, kTcpSyn),
                                                  {.total_length = 10})),
                          {},
                          false},
                      0x1234, std::nullopt, kLanIf, 0x1234}}},

      // ---- the mark ----
      {.name = "MmxMaskKeepsForeignBits",
       .description = "only the bits under mmx_mask are replaced; the rest of skb->mark survives",
       .rules = {R(kWanOnly)},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443), 0x800001ffu, by_rule(1, kWan), kLanIf, 0x80003aff}},
       .counters = {{0, 1}}},
      {.name = "MmxMaskNarrower",
       .description = "mmx_mask 0x0f00: only those four bits change, 0x3000 of the old mark survives",
       .cfg = cfg_of(0x0f00, 0, kFlowTimeoutS),
       .rules = {R(kLteOnly)},
       .steps = {Step{tcp_pkt(kHostA, 40000, kWeb, 443), 0xf0f0f3f0u, by_rule(1, kLte), kLanIf, 0xf0f0fff0u}},
       .counters = {{0, 1}}},
  };
}

// ---- the tester -------------------------------------------------------------------------------

struct RunResult {
  int err = 0;
  uint32_t retval = 0;
  uint32_t mark = 0;
  Bytes data_out;
};

RunResult run_tc(int prog_fd, const Bytes& frame, uint32_t ifindex, uint32_t mark_in) {
  RunResult r;
  __sk_buff ctx_in{};
  ctx_in.mark = mark_in;
  ctx_in.ingress_ifindex = ifindex;
  __sk_buff ctx_out{};
  TestRun run = test_run_once(prog_fd, frame, ctx_in, &ctx_out, 64);
  r.err = run.err != 0 ? run.saved_errno : 0;
  r.retval = run.retval;
  r.mark = ctx_out.mark;
  r.data_out = std::move(run.data_out);
  return r;
}

std::string hex(const void* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  const auto* b = static_cast<const uint8_t*>(p);
  std::string s;
  for (size_t i = 0; i < n; i++) {
    s += digits[b[i] >> 4];
    s += digits[b[i] & 15];
  }
  return s;
}

// A freshly loaded lan_ingress (every map empty) and the map writes the rows need.
class LanProgram {
 public:
  explicit LanProgram(bool l3_only = false, uint32_t prog_flags = 0) {
    skel_ = lan_ingress__open();
    if (skel_ == nullptr) {
      load_err_ = -errno;
      return;
    }
    skel_->rodata->l3_only = l3_only ? 1 : 0;
    if (prog_flags != 0) {
      bpf_program__set_flags(skel_->progs.lan_ingress,
                             bpf_program__flags(skel_->progs.lan_ingress) | prog_flags);
    }
    load_err_ = lan_ingress__load(skel_);
  }
  ~LanProgram() {
    if (skel_ != nullptr) {
      lan_ingress__destroy(skel_);
    }
  }
  LanProgram(const LanProgram&) = delete;
  LanProgram& operator=(const LanProgram&) = delete;

  bool ok() const { return skel_ != nullptr && load_err_ == 0; }
  int load_err() const { return load_err_; }
  lan_ingress* skel() { return skel_; }
  int prog_fd() { return bpf_program__fd(skel_->progs.lan_ingress); }
  int fd(bpf_map* map) { return bpf_map__fd(map); }

  int set_cfg(const classifier_cfg& cfg) {
    uint32_t zero = 0;
    return bpf_map_update_elem(fd(skel_->maps.classifier_cfg), &zero, &cfg, BPF_ANY);
  }
  int set_uplink(const UplinkRow& u) {
    uint32_t id = u.id;
    uplink_record r{};
    r.ifindex = 100u + u.id;
    r.state = u.state;
    r.generation = u.generation;
    r.mark = mark_of(u.id);
    return bpf_map_update_elem(fd(skel_->maps.uplinks), &id, &r, BPF_ANY);
  }
  int set_policy(const PolicyRow& p) {
    uint32_t v4 = UPLINKD_POLICY_SLOT(p.id, 4), v6 = UPLINKD_POLICY_SLOT(p.id, 6);
    int err = bpf_map_update_elem(fd(skel_->maps.policies), &v4, &p.v4, BPF_ANY);
    return err != 0 ? err : bpf_map_update_elem(fd(skel_->maps.policies), &v6, &p.v6, BPF_ANY);
  }
  // The entry, then the tables of every rule set so far (rule_tables_helper.h), as the daemon does.
  int set_rule(uint32_t index, const rule_entry& rule) {
    if (rules_.size() <= index) rules_.resize(index + 1);
    rules_[index] = rule;
    return uplinkd::testing::write_rules_and_tables(skel_, rules_);
  }
  int add_connected(const char* text) {
    const lpm_key key = lpm_of(text);
    const uint8_t one = 1;
    return bpf_map_update_elem(fd(skel_->maps.connected), &key, &one, BPF_ANY);
  }
  // The daemon's way: a trie shaped like the inner-map template, then its fd into sets[id - 1].
  int add_set(const SetRow& s) {
    bpf_map_create_opts opts{};
    opts.sz = sizeof opts;
    opts.map_flags = BPF_F_NO_PREALLOC;
    const int trie = bpf_map_create(BPF_MAP_TYPE_LPM_TRIE, "set", sizeof(lpm_key), 1, 1024, &opts);
    if (trie < 0) {
      return trie;
    }
    int err = 0;
    for (const char* c : s.cidrs) {
      const lpm_key key = lpm_of(c);
      const uint8_t one = 1;
      err = err != 0 ? err : bpf_map_update_elem(trie, &key, &one, BPF_ANY);
    }
    uint32_t slot = s.id - 1u;
    err = err != 0 ? err : bpf_map_update_elem(fd(skel_->maps.sets), &slot, &trie, BPF_ANY);
    close(trie);  // the outer map holds its own reference
    return err;
  }
  // A stamp `age` before `now`, but never before boot: CLOCK_MONOTONIC starts at boot, so on a
  // machine (or VM) up for less than `age` the subtraction would wrap into the far future.
  static uint64_t stamp_aged(uint64_t now, uint64_t age) { return now > age ? now - age : 0; }

  int add_flow(const FlowRow& f, uint64_t now) {
    flow_value v{};
    v.last_seen_ns = stamp_aged(now, f.age_ns);
    v.mark = f.mark.value_or(mark_of(f.uplink));
    v.generation = f.generation;
    v.uplink_id = f.uplink;
    v.rule_id = f.rule_id;
    v.origin = f.origin;
    return bpf_map_update_elem(fd(skel_->maps.flows), &f.key, &v, BPF_NOEXIST);
  }
  int add_sticky(const StickyRow& s, uint64_t now) {
    const sticky_key key = sticky_key_of(s.src, s.rule_id);
    sticky_value v{};
    v.last_seen_ns = stamp_aged(now, s.age_ns);
    v.generation = s.generation;
    v.uplink_id = s.uplink;
    v.mark = mark_of(s.uplink);
    return bpf_map_update_elem(fd(skel_->maps.sticky), &key, &v, BPF_NOEXIST);
  }
  int add_inbound(const InboundRow& in, uint64_t now) {
    inbound_key key{};
    put_addr(in.raddr, key.raddr);
    key.rport = htons(in.rport);
    key.proto = in.proto;
    key.family = is_v6(in.raddr) ? 6 : 4;
    inbound_value v{};
    v.last_seen_ns = stamp_aged(now, in.age_ns);
    v.mark = mark_of(in.uplink);
    v.uplink_id = in.uplink;
    return bpf_map_update_elem(fd(skel_->maps.inbound), &key, &v, BPF_NOEXIST);
  }

  std::optional<flow_value> flow(const flow_key& key) {
    flow_value v{};
    if (bpf_map_lookup_elem(fd(skel_->maps.flows), &key, &v) != 0) {
      return std::nullopt;
    }
    return v;
  }
  size_t flow_count() {
    size_t n = 0;
    flow_key key{}, next{};
    const flow_key* prev = nullptr;
    while (bpf_map_get_next_key(fd(skel_->maps.flows), prev, &next) == 0) {
      n++;
      key = next;
      prev = &key;
    }
    return n;
  }
  std::optional<sticky_value> sticky(const char* src, uint32_t rule_id) {
    const sticky_key key = sticky_key_of(src, rule_id);
    sticky_value v{};
    if (bpf_map_lookup_elem(fd(skel_->maps.sticky), &key, &v) != 0) {
      return std::nullopt;
    }
    return v;
  }
  size_t sticky_count() {
    size_t n = 0;
    sticky_key key{}, next{};
    const sticky_key* prev = nullptr;
    while (bpf_map_get_next_key(fd(skel_->maps.sticky), prev, &next) == 0) {
      n++;
      key = next;
      prev = &key;
    }
    return n;
  }
  int add_seen(const flow_key& key, uint32_t next_seq) {
    tcp_seen v{};
    v.last_seen_ns = monotonic_ns();
    v.next_seq = next_seq;
    v.ifindex = kLanIf;
    return bpf_map_update_elem(fd(skel_->maps.tcp_seen), &key, &v, BPF_NOEXIST);
  }
  bool has_seen(const flow_key& key) {
    tcp_seen v{};
    return bpf_map_lookup_elem(fd(skel_->maps.tcp_seen), &key, &v) == 0;
  }
  // flow_counters[0] summed over CPUs, as the daemon reads it.
  flow_counters stale_counters() {
    const int cpus = libbpf_num_possible_cpus();
    std::vector<flow_counters> per_cpu(static_cast<size_t>(cpus));
    flow_counters sum{};
    uint32_t zero = 0;
    if (bpf_map_lookup_elem(fd(skel_->maps.flow_counters), &zero, per_cpu.data()) == 0) {
      for (const flow_counters& c : per_cpu) {
        sum.created += c.created;
        sum.stale_tcp_reset += c.stale_tcp_reset;
        sum.stale_tcp_refused += c.stale_tcp_refused;
        sum.reclassified += c.reclassified;
        sum.idle_reclassified += c.idle_reclassified;
      }
    }
    return sum;
  }
  rule_counter counter(uint32_t index) {
    const int cpus = libbpf_num_possible_cpus();
    std::vector<rule_counter> per_cpu(static_cast<size_t>(cpus));
    rule_counter sum{};
    if (bpf_map_lookup_elem(fd(skel_->maps.rule_counters), &index, per_cpu.data()) == 0) {
      for (const rule_counter& c : per_cpu) {
        sum.packets += c.packets;
        sum.bytes += c.bytes;
      }
    }
    return sum;
  }

  // Everything a row sets up, in the daemon's order: uplinks before the policies that name them,
  // rules before the n_rules that makes them live.
  void load_row(const Case& c, uint64_t now) {
    for (const UplinkRow& u : c.uplinks) {
      ASSERT_EQ(set_uplink(u), 0);
    }
    for (const PolicyRow& p : default_policies()) {
      ASSERT_EQ(set_policy(p), 0);
    }
    for (size_t i = 0; i < c.rules.size(); i++) {
      ASSERT_EQ(set_rule(static_cast<uint32_t>(i), c.rules[i]), 0);
    }
    for (const char* net : c.connected) {
      ASSERT_EQ(add_connected(net), 0) << net;
    }
    for (const SetRow& s : c.sets) {
      ASSERT_EQ(add_set(s), 0);
    }
    for (const FlowRow& f : c.flows) {
      ASSERT_EQ(add_flow(f, now), 0);
    }
    for (const StickyRow& s : c.sticky) {
      ASSERT_EQ(add_sticky(s, now), 0);
    }
    for (const InboundRow& in : c.inbound) {
      ASSERT_EQ(add_inbound(in, now), 0);
    }
    classifier_cfg cfg = c.cfg;
    cfg.n_rules = c.n_rules.value_or(static_cast<uint32_t>(c.rules.size()));
    ASSERT_EQ(set_cfg(cfg), 0);
  }

 private:
  static sticky_key sticky_key_of(const char* src, uint32_t rule_id) {
    sticky_key key{};
    put_addr(src, key.saddr);
    key.rule_id = rule_id;
    key.family = is_v6(src) ? 6 : 4;
    return key;
  }

  lan_ingress* skel_ = nullptr;
  int load_err_ = -1;
  std::vector<rule_entry> rules_;
};

class LanIngressTest : public ::testing::TestWithParam<Case> {};

TEST_P(LanIngressTest, Fixture) {
  const Case& c = GetParam();
  SCOPED_TRACE(c.description);
  LanProgram prog(c.l3_only);
  ASSERT_TRUE(prog.ok()) << "loading lan_ingress: " << strerror(-prog.load_err()) << " (run as root)";
  // The program stamps with the coarse clock: a stamp it writes during a step is at least the
  // coarse time read before that step, possibly equal to it.
  const uint64_t setup_ns = monotonic_coarse_ns();
  prog.load_row(c, setup_ns);
  if (HasFatalFailure()) {
    return;
  }

  size_t flows_before = prog.flow_count();
  for (size_t i = 0; i < c.steps.size(); i++) {
    SCOPED_TRACE("step " + std::to_string(i));
    const Step& step = c.steps[i];
    const std::optional<flow_value> prior = prog.flow(step.pkt.key);
    const uint64_t before_ns = monotonic_coarse_ns();
    const RunResult r = run_tc(prog.prog_fd(), step.pkt.frame, step.ifindex, step.mark_in);
    ASSERT_EQ(r.err, 0) << strerror(r.err);
    EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
    EXPECT_EQ(r.mark, step.mark_out) << std::hex << "mark 0x" << r.mark << ", want 0x" << step.mark_out;
    EXPECT_EQ(r.data_out, step.pkt.frame) << "the packet must pass unchanged";

    if (!step.flow) {
      EXPECT_EQ(prog.flow_count(), flows_before) << "a packet that is not classified must leave no flow";
      continue;
    }
    flows_before = prog.flow_count();
    const std::optional<flow_value> got = prog.flow(step.pkt.key);
    ASSERT_TRUE(got.has_value()) << "no flow under key " << hex(&step.pkt.key, sizeof step.pkt.key);
    const FlowExpect& want = *step.flow;
    EXPECT_EQ(got->origin, want.origin);
    EXPECT_EQ(got->uplink_id, want.uplink);
    EXPECT_EQ(got->rule_id, want.rule_id);
    EXPECT_EQ(got->generation, want.generation);
    EXPECT_EQ(got->mark, want.mark) << std::hex << "flow mark 0x" << got->mark;
    if (want.stamp == Stamp::Now) {
      EXPECT_GE(got->last_seen_ns, before_ns) << "the step must have stamped the flow";
    } else {
      // Compared with the stamp before the step, not with the clock: on the coarse clock an
      // earlier step's stamp may equal before_ns.
      ASSERT_TRUE(prior.has_value()) << "a kept stamp needs an entry before the step";
      EXPECT_EQ(got->last_seen_ns, prior->last_seen_ns) << "the step must not have stamped the flow";
    }
  }

  for (uint32_t index = 0; index < UPLINKD_MAX_RULES; index++) {
    uint64_t want = 0;
    for (const RuleCount& rc : c.counters) {
      if (rc.index == index) {
        want = rc.packets;
      }
    }
    const rule_counter got = prog.counter(index);
    EXPECT_EQ(got.packets, want) << "rule_counters[" << index << "]";
    EXPECT_EQ(got.bytes == 0, want == 0) << "rule_counters[" << index << "].bytes " << got.bytes;
  }

  EXPECT_EQ(prog.sticky_count(), c.sticky_after.size()) << "sticky_after lists every entry left";
  for (const StickyExpect& s : c.sticky_after) {
    SCOPED_TRACE(std::string("sticky ") + s.src + " rule " + std::to_string(s.rule_id));
    const std::optional<sticky_value> got = prog.sticky(s.src, s.rule_id);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->uplink_id, s.uplink);
    EXPECT_EQ(got->generation, s.generation);
    EXPECT_EQ(got->mark, mark_of(s.uplink));
    if (s.stamp == Stamp::Now) {
      EXPECT_GE(got->last_seen_ns, setup_ns);
    } else {
      EXPECT_LT(got->last_seen_ns, setup_ns);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Rows, LanIngressTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.name);
                         });

// ---- properties outside the rows --------------------------------------------------------------

// Runs `flows` new TCP flows (distinct hosts and ports) through a one-rule classifier whose policy
// has the given weights over wan, wanb, lte; returns how many each uplink got. Every decision must
// also be the member the C++ reference of the hash and pick table predicts.
std::map<uint16_t, int> spread(const std::vector<Member>& members, int flows) {
  std::map<uint16_t, int> got;
  LanProgram prog;
  EXPECT_TRUE(prog.ok());
  if (!prog.ok()) {
    return got;
  }
  const policy_entry policy = members_entry(members);
  constexpr uint32_t kPolicy = 20;
  for (const UplinkRow& u : default_uplinks()) {
    EXPECT_EQ(prog.set_uplink(u), 0);
  }
  EXPECT_EQ(prog.set_policy(PolicyRow{kPolicy, policy, policy}), 0);
  EXPECT_EQ(prog.set_rule(0, R(kPolicy)), 0);
  EXPECT_EQ(prog.set_cfg(cfg_of(kMmxMask, 1, kFlowTimeoutS)), 0);
  int mismatches = 0;
  for (int i = 0; i < flows; i++) {
    char src[32];
    std::snprintf(src, sizeof src, "10.0.%d.%d", i / 200, 1 + i % 200);
    const Pkt p = tcp_pkt(src, static_cast<uint16_t>(30000 + i), kWeb, 443);
    const RunResult r = run_tc(prog.prog_fd(), p.frame, kLanIf, 0);
    EXPECT_EQ(r.err, 0);
    const uint16_t uplink = static_cast<uint16_t>(r.mark >> 8);
    got[uplink]++;
    const uint32_t h = hash_of(p.key);
    uint32_t want = members.size() - 1;
    for (uint32_t m = 0; m < members.size(); m++) {
      if (h <= policy.threshold[m]) {
        want = m;
        break;
      }
    }
    mismatches += uplink != members[want].uplink ? 1 : 0;
  }
  EXPECT_EQ(mismatches, 0) << "decisions that differ from flow_hash_words() + the pick table";
  return got;
}

void expect_share(const std::map<uint16_t, int>& got, uint16_t uplink, double want_pct, int flows) {
  const double pct = 100.0 * (got.count(uplink) != 0 ? got.at(uplink) : 0) / flows;
  std::printf("  uplink %u: %.1f%% (want %.0f%% +- 5)\n", uplink, pct, want_pct);
  EXPECT_NEAR(pct, want_pct, 5.0) << "uplink " << uplink;
}

TEST(LanIngressWeights, ThreeToTwo) {
  constexpr int kFlows = 2000;
  const auto got = spread({{kWan, 3}, {kWanb, 2}}, kFlows);
  expect_share(got, kWan, 60, kFlows);
  expect_share(got, kWanb, 40, kFlows);
}

TEST(LanIngressWeights, ThreeTwoFive) {
  constexpr int kFlows = 2000;
  const auto got = spread({{kWan, 3}, {kWanb, 2}, {kLte, 5}}, kFlows);
  expect_share(got, kWan, 30, kFlows);
  expect_share(got, kWanb, 20, kFlows);
  expect_share(got, kLte, 50, kFlows);
}

// Sticky across flows of one source: find two source ports the hash sends to different members of
// a 50/50 policy; with a sticky rule the second flow follows the first, without it it does not.
TEST(LanIngressSticky, SecondFlowFollowsFirst) {
  const policy_entry half = members_entry({{kWan, 1}, {kWanb, 1}});
  std::optional<uint16_t> to_wan, to_wanb;
  for (uint16_t port = 40000; port < 40200 && (!to_wan || !to_wanb); port++) {
    const uint32_t h = hash_of(tcp_pkt(kHostA, port, kWeb, 443).key);
    (h <= half.threshold[0] ? to_wan : to_wanb) = port;
  }
  ASSERT_TRUE(to_wan && to_wanb);
  constexpr uint32_t kPolicy = 21;
  for (bool sticky : {false, true}) {
    SCOPED_TRACE(sticky ? "sticky" : "not sticky");
    LanProgram prog;
    ASSERT_TRUE(prog.ok());
    for (const UplinkRow& u : default_uplinks()) {
      ASSERT_EQ(prog.set_uplink(u), 0);
    }
    ASSERT_EQ(prog.set_policy(PolicyRow{kPolicy, half, half}), 0);
    ASSERT_EQ(prog.set_rule(0, sticky ? static_cast<rule_entry>(R(kPolicy).sticky()) : R(kPolicy)), 0);
    ASSERT_EQ(prog.set_cfg(cfg_of(kMmxMask, 1, kFlowTimeoutS)), 0);
    EXPECT_EQ(run_tc(prog.prog_fd(), tcp_pkt(kHostA, *to_wanb, kWeb, 443).frame, kLanIf, 0).mark,
              mark_of(kWanb));
    EXPECT_EQ(run_tc(prog.prog_fd(), tcp_pkt(kHostA, *to_wan, kWeb, 443).frame, kLanIf, 0).mark,
              mark_of(sticky ? kWanb : kWan));
  }
}

uint32_t verified_insns(int prog_fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0) {
    return 0;
  }
  return info.verified_insns;
}

// The verifier's work does not grow with the rule count (the bit-vector classifier's cost is fixed,
// and first_matching_rule is a global function, verified once); this loads the program, fills all
// UPLINKD_MAX_RULES rules with full lists, and checks the last one still decides.
TEST(LanIngressProgram, TwoHundredFiftySixRules) {
  LanProgram prog;
  ASSERT_TRUE(prog.ok()) << "lan_ingress must load: " << strerror(-prog.load_err());
  const uint32_t insns = verified_insns(prog.prog_fd());
  std::printf("lan_ingress verified_insns: %u (independent of the %d rules it can hold)\n", insns,
              UPLINKD_MAX_RULES);
  EXPECT_GT(insns, 0u) << "kernel did not report verified_insns";
  RecordProperty("lan_ingress_verified_insns", static_cast<int>(insns));

  for (const UplinkRow& u : default_uplinks()) {
    ASSERT_EQ(prog.set_uplink(u), 0);
  }
  for (const PolicyRow& p : default_policies()) {
    ASSERT_EQ(prog.set_policy(p), 0);
  }
  // Rules 0..254 match everything but their destination lists; rule 255 matches.
  for (uint32_t i = 0; i < UPLINKD_MAX_RULES; i++) {
    R r(i + 1 == UPLINKD_MAX_RULES ? kLteOnly : kWanOnly);
    r.family(4).proto(IPPROTO_TCP);
    r.src({"10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16", "10.4.0.0/16", "10.5.0.0/16",
           "10.6.0.0/16", "10.7.0.0/16"});
    r.sport({{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}, {6, 6}, {7, 7}, {1024, 65535}});
    r.dport({{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}, {6, 6}, {7, 7}, {443, 443}});
    if (i + 1 == UPLINKD_MAX_RULES) {
      r.dst({"203.0.113.0/24"});
    } else {
      r.dst({"192.0.2.0/28", "192.0.2.16/28", "192.0.2.32/28", "192.0.2.48/28", "192.0.2.64/28",
             "192.0.2.80/28", "192.0.2.96/28", "192.0.2.112/28"});
    }
    ASSERT_EQ(prog.set_rule(i, r), 0);
  }
  ASSERT_EQ(prog.set_cfg(cfg_of(kMmxMask, UPLINKD_MAX_RULES, kFlowTimeoutS)), 0);

  const Pkt p = tcp_pkt(kHostA, 40000, kWeb, 443);
  const RunResult r = run_tc(prog.prog_fd(), p.frame, kLanIf, 0);
  ASSERT_EQ(r.err, 0);
  EXPECT_EQ(r.mark, mark_of(kLte));
  EXPECT_EQ(prog.counter(UPLINKD_MAX_RULES - 1).packets, 1u);
  EXPECT_EQ(prog.counter(0).packets, 0u);
  const std::optional<flow_value> flow = prog.flow(p.key);
  ASSERT_TRUE(flow.has_value());
  EXPECT_EQ(flow->rule_id, UPLINKD_MAX_RULES);
}

// Kernels on architectures without efficient unaligned access (MIPS OpenWrt routers) check every
// packet load against NET_IP_ALIGN; BPF_F_STRICT_ALIGNMENT applies the same check here.
TEST(LanIngressProgram, LoadsUnderStrictAlignment) {
  for (bool l3_only : {false, true}) {
    SCOPED_TRACE(l3_only ? "l3_only" : "ethernet");
    LanProgram prog(l3_only, BPF_F_STRICT_ALIGNMENT);
    EXPECT_TRUE(prog.ok()) << "the verifier log above names the misaligned access";
    if (prog.ok()) {
      std::printf("lan_ingress (%s, strict alignment) verified_insns: %u\n", l3_only ? "l3_only" : "ethernet",
                  verified_insns(prog.prog_fd()));
    }
  }
}

TEST(LanIngressProgram, MapsMatchTheAbi) {
  LanProgram prog;
  ASSERT_TRUE(prog.ok());
  lan_ingress* s = prog.skel();
  struct Expected {
    bpf_map* map;
    const char* name;
    bpf_map_type type;
    uint32_t max_entries;
    uint32_t key_size;
    uint32_t value_size;
  };
  const Expected maps[] = {
      {s->maps.classifier_cfg, UPLINKD_MAP_CLASSIFIER_CFG, BPF_MAP_TYPE_ARRAY, 1, 4, sizeof(classifier_cfg)},
      {s->maps.rules, UPLINKD_MAP_RULES, BPF_MAP_TYPE_ARRAY, UPLINKD_MAX_RULES, 4, sizeof(rule_entry)},
      {s->maps.rule_counters, UPLINKD_MAP_RULE_COUNTERS, BPF_MAP_TYPE_PERCPU_ARRAY, UPLINKD_MAX_RULES, 4,
       sizeof(rule_counter)},
      {s->maps.policies, UPLINKD_MAP_POLICIES, BPF_MAP_TYPE_ARRAY, UPLINKD_POLICY_SLOTS, 4,
       sizeof(policy_entry)},
      {s->maps.flows, UPLINKD_MAP_FLOWS, BPF_MAP_TYPE_LRU_HASH, UPLINKD_MAX_FLOWS, sizeof(flow_key),
       sizeof(flow_value)},
      {s->maps.sticky, UPLINKD_MAP_STICKY, BPF_MAP_TYPE_LRU_HASH, UPLINKD_MAX_STICKY, sizeof(sticky_key),
       sizeof(sticky_value)},
      {s->maps.inbound, UPLINKD_MAP_INBOUND, BPF_MAP_TYPE_LRU_HASH, UPLINKD_MAX_INBOUND, sizeof(inbound_key),
       sizeof(inbound_value)},
      {s->maps.connected, UPLINKD_MAP_CONNECTED, BPF_MAP_TYPE_LPM_TRIE, UPLINKD_MAX_CONNECTED,
       sizeof(lpm_key), 1},
      {s->maps.sets, UPLINKD_MAP_SETS, BPF_MAP_TYPE_ARRAY_OF_MAPS, UPLINKD_MAX_SETS, 4, 4},
      {s->maps.uplinks, UPLINKD_MAP_UPLINKS, BPF_MAP_TYPE_ARRAY, UPLINKD_MAX_UPLINKS, 4,
       sizeof(uplink_record)},
      {s->maps.tcp_seen, UPLINKD_MAP_TCP_SEEN, BPF_MAP_TYPE_LRU_HASH, UPLINKD_MAX_TCP_SEEN, sizeof(flow_key),
       sizeof(tcp_seen)},
      {s->maps.flow_counters, UPLINKD_MAP_FLOW_COUNTERS, BPF_MAP_TYPE_PERCPU_ARRAY, 1, 4,
       sizeof(flow_counters)},
  };
  for (const Expected& m : maps) {
    SCOPED_TRACE(m.name);
    EXPECT_STREQ(bpf_map__name(m.map), m.name);
    EXPECT_EQ(bpf_map__type(m.map), m.type);
    EXPECT_EQ(bpf_map__max_entries(m.map), m.max_entries);
    EXPECT_EQ(bpf_map__key_size(m.map), m.key_size);
    EXPECT_EQ(bpf_map__value_size(m.map), m.value_size);
    EXPECT_EQ(bpf_map__pin_path(m.map), nullptr) << "maps carry no pinning attribute";
  }
  EXPECT_EQ(bpf_map__map_flags(s->maps.connected) & BPF_F_NO_PREALLOC,
            static_cast<uint32_t>(BPF_F_NO_PREALLOC));
  // libbpf frees the inner-map template once the outer map exists: look at an unloaded copy.
  lan_ingress* unloaded = lan_ingress__open();
  ASSERT_NE(unloaded, nullptr);
  const bpf_map* inner = bpf_map__inner_map(unloaded->maps.sets);
  EXPECT_NE(inner, nullptr);
  if (inner != nullptr) {
    EXPECT_EQ(bpf_map__type(inner), BPF_MAP_TYPE_LPM_TRIE);
    EXPECT_EQ(bpf_map__key_size(inner), sizeof(lpm_key));
    EXPECT_EQ(bpf_map__value_size(inner), 1u);
    EXPECT_EQ(bpf_map__map_flags(inner), static_cast<uint32_t>(BPF_F_NO_PREALLOC));
    EXPECT_EQ(bpf_map__max_entries(inner), static_cast<uint32_t>(UPLINKD_MAX_SET_ENTRIES));
  }
  lan_ingress__destroy(unloaded);

  // lan_ingress and wan_ingress share `inbound` and `uplinks` through pinning: same shape in both.
  wan_ingress* wan = wan_ingress__open();
  ASSERT_NE(wan, nullptr);
  EXPECT_EQ(bpf_map__max_entries(wan->maps.inbound), bpf_map__max_entries(s->maps.inbound));
  EXPECT_EQ(bpf_map__type(wan->maps.inbound), bpf_map__type(s->maps.inbound));
  EXPECT_EQ(bpf_map__key_size(wan->maps.inbound), bpf_map__key_size(s->maps.inbound));
  EXPECT_EQ(bpf_map__value_size(wan->maps.inbound), bpf_map__value_size(s->maps.inbound));
  EXPECT_EQ(bpf_map__max_entries(wan->maps.uplinks), bpf_map__max_entries(s->maps.uplinks));
  wan_ingress__destroy(wan);
}

// ---- stale flows: a RST back to the client, or classified again ---------------------------------
//
// One packet on a flow the map already holds (on wanb, generation 1 unless the row says otherwise;
// TCP flows also with a tcp_seen entry), per row. The uplink record says whether the flow is stale
// (wanb offline, or its generation moved) or idle; the row says what must come of the packet: a
// RST sent back out the LAN device (TC_ACT_REDIRECT, the output data is the RST), classified again
// (TC_ACT_OK, packet unchanged, the only rule sends it by wan), or the decision held.
//
// The redirect target is skb->ifindex. BPF_PROG_TEST_RUN takes it from ctx_in.ifindex, which must
// name an existing device (the kernel answers ENODEV otherwise; 0 and 1 are the loopback); these
// fixtures leave it 0, and LanIngressStaleCtx checks that contract. A test run sends nothing, so
// only the verdict shows the redirect.

constexpr Mac kClientMac{{0x02, 0x00, 0x00, 0x00, 0x0c, 0x01}};
constexpr Mac kRouterMac{{0x02, 0x00, 0x00, 0x00, 0x0a, 0x01}};

// A LAN client's TCP segment on its flow to kWeb:443 (or kWeb6), as the row shapes it.
struct ClientSegment {
  const char* src = kHostA;
  const char* dst = kWeb;
  uint8_t flags = kTcpAck | kTcpPsh;
  TcpSegment tcp{tcp_timestamps(1000, 2000), Bytes(100, 0x5a)};
  std::vector<VlanTag> tags;
  Ipv4Options ip4;
  bool hop_by_hop = false;  // IPv6: a hop-by-hop header in front of TCP
  size_t padding = 0;       // bytes after the IP packet (Ethernet padding the IP length excludes)
  bool l3_only = false;
};

constexpr uint16_t kClientPort = 40000, kServerPort = 443;
constexpr uint32_t kClientSeq = 0x11223344, kClientAck = 0xdeadbeef;

Pkt client_segment(const ClientSegment& c) {
  const Bytes l4 = tcp_segment(kClientPort, kServerPort, kClientSeq, kClientAck, c.flags, c.tcp);
  Bytes l3;
  if (is_v6(c.src)) {
    l3 = c.hop_by_hop ? ipv6_ext(c.src, c.dst, {ipv6_hop_by_hop()}, IPPROTO_TCP, l4)
                      : ipv6(c.src, c.dst, IPPROTO_TCP, l4);
  } else {
    l3 = ipv4(c.src, c.dst, IPPROTO_TCP, l4, c.ip4);
  }
  l3.resize(l3.size() + c.padding, 0);
  // A first fragment (offset 0) carries its ports and is keyed with them; a later one is not.
  const bool later_fragment = (c.ip4.frag_off & 0x1fff) != 0;
  const uint16_t sport = later_fragment ? 0 : kClientPort, dport = later_fragment ? 0 : kServerPort;
  Bytes frame =
      c.l3_only ? l3 : ethernet(is_v6(c.src) ? ETH_P_IPV6 : ETH_P_IP, l3, c.tags, kRouterMac, kClientMac);
  return Pkt{std::move(frame), make_key(c.src, c.dst, IPPROTO_TCP, sport, dport)};
}

enum class Outcome { Reset, Classified, Held };

// flow_counters as the rows state them: created, stale_tcp_reset, stale_tcp_refused,
// reclassified, idle_reclassified.
struct Counts {
  uint64_t created, reset, refused, reclassified, idle;
  bool operator==(const Counts&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Counts& c) {
  return os << "{created " << c.created << ", reset " << c.reset << ", refused " << c.refused
            << ", reclassified " << c.reclassified << ", idle " << c.idle << "}";
}
constexpr Counts kNoCounts{0, 0, 0, 0, 0};
constexpr Counts kCountedReset{0, 1, 0, 0, 0};
constexpr Counts kCountedRefused{1, 0, 1, 0, 0};
constexpr Counts kCountedReclassified{1, 0, 0, 1, 0};
constexpr Counts kCountedIdle{1, 0, 0, 0, 1};

struct StaleRow {
  const char* name;
  const char* description;
  ClientSegment seg;
  std::optional<Pkt> other;  // a packet other than the TCP segment (UDP, ICMP)
  uint32_t flags = UPLINKD_CFG_RESET_STALE_TCP;
  uint32_t tcp_timeout_s = kFlowTimeoutS;
  uint32_t udp_timeout_s = kFlowTimeoutS;
  uint32_t other_timeout_s = kFlowTimeoutS;
  UplinkRow wanb{kWanb, UPLINK_STATE_OFFLINE, 1};  // the flow's uplink as it is now
  uint32_t flow_generation = 1;
  uint64_t flow_age_ns = 5 * kSecondNs;
  Outcome outcome = Outcome::Reset;
  Counts counts = kCountedReset;
};

void PrintTo(const StaleRow& r, std::ostream* os) { *os << r.name << ": " << r.description; }

ClientSegment v6_segment() {
  ClientSegment c;
  c.src = kHostA6;
  c.dst = kWeb6;
  return c;
}

std::vector<StaleRow> StaleRows() {
  const VlanTag q{ETH_P_8021Q, 100}, ad{ETH_P_8021AD, 200};
  const UplinkRow wanb_up{kWanb, UPLINK_STATE_ONLINE, 1};
  auto seg = [](auto&& shape) {
    ClientSegment c;
    shape(c);
    return c;
  };
  auto refused = [](const char* name, const char* description, ClientSegment c) {
    return StaleRow{.name = name,
                    .description = description,
                    .seg = std::move(c),
                    .outcome = Outcome::Classified,
                    .counts = kCountedRefused};
  };
  return {
      // ---- answered with a RST ----
      {.name = "Ipv4Reset",
       .description = "the client's data segment on a flow whose uplink is offline becomes the RST"},
      {.name = "Ipv6Reset", .description = "the same over IPv6", .seg = v6_segment()},
      {.name = "VlanTagsKept",
       .description = "a QinQ-tagged frame: the RST keeps both tags as they were",
       .seg = seg([&](ClientSegment& c) {
         c.tags = {ad, q};
       })},
      {.name = "L3OnlyDevice",
       .description = "a device without link layer: the RST starts at the IP header, no MACs",
       .seg = seg([](ClientSegment& c) { c.l3_only = true; })},
      {.name = "L3OnlyDeviceIpv6",
       .description = "the same over IPv6",
       .seg =
           [] {
             ClientSegment c = v6_segment();
             c.l3_only = true;
             return c;
           }()},
      {.name = "FinAck",
       .description = "a FIN with ACK carries the client's RCV.NXT like any segment: answered",
       .seg = seg([](ClientSegment& c) { c.flags = kTcpFin | kTcpAck; })},
      {.name = "BareAckNothingToTrim",
       .description = "a bare ACK without options is already header-only: rewritten without a cut",
       .seg = seg([](ClientSegment& c) {
         c.flags = kTcpAck;
         c.tcp = TcpSegment{};
       })},
      {.name = "EthernetPaddingTrimmed",
       .description = "a short segment padded to the Ethernet minimum: the padding is cut off",
       .seg = seg([](ClientSegment& c) {
         c.flags = kTcpAck;
         c.tcp = TcpSegment{};
         c.padding = 6;
       })},
      {.name = "UplinkBackWithNewGeneration",
       .description = "wanb went down and came back (generation 1 -> 2): the flow is still stale",
       .wanb = {kWanb, UPLINK_STATE_ONLINE, 2}},
      {.name = "GenerationWrap",
       .description = "generation 0xFFFFFFFF -> 0 is a move like any other (plain inequality)",
       .wanb = {kWanb, UPLINK_STATE_ONLINE, 0},
       .flow_generation = 0xffffffffu},
      {.name = "StaleBeforeIdle",
       .description = "stale and idle at once: the RST, not a silent new route",
       .tcp_timeout_s = 2,
       .flow_age_ns = 3 * kSecondNs},

      // ---- held ----
      {.name = "FreshFlowUntouched",
       .description = "uplink online, same generation: TC_ACT_OK, the flow's mark, packet unchanged",
       .wanb = wanb_up,
       .outcome = Outcome::Held,
       .counts = kNoCounts},
      {.name = "SameGenerationAtMax",
       .description = "generation 0xFFFFFFFF on both sides holds",
       .wanb = {kWanb, UPLINK_STATE_ONLINE, 0xffffffffu},
       .flow_generation = 0xffffffffu,
       .outcome = Outcome::Held,
       .counts = kNoCounts},
      {.name = "DisconnectingHeld",
       .description = "a disconnecting uplink still carries its flows (mwan3 uses it until offline)",
       .wanb = {kWanb, UPLINK_STATE_DISCONNECTING, 1},
       .outcome = Outcome::Held,
       .counts = kNoCounts},

      // ---- not TCP: classified again ----
      {.name = "UdpReclassified",
       .description = "a stale UDP flow moves to the policy's current member (wan)",
       .other = udp_pkt(kHostA, 5000, kDns, 53),
       .outcome = Outcome::Classified,
       .counts = kCountedReclassified},
      {.name = "IcmpReclassified",
       .description = "a stale ICMP flow likewise",
       .other = icmp_pkt(kHostA, kWeb),
       .outcome = Outcome::Classified,
       .counts = kCountedReclassified},
      {.name = "FlagOffNoReset",
       .description = "without UPLINKD_CFG_RESET_STALE_TCP a stale TCP flow is classified again",
       .flags = 0,
       .outcome = Outcome::Classified,
       .counts = kCountedReclassified},

      // ---- stale TCP that must never be answered ----
      refused("NoAck", "no ACK flag: no RCV.NXT to aim at", seg([](ClientSegment& c) { c.flags = kTcpPsh; })),
      refused("ClientRst", "the client's own RST (with ACK) is never answered",
              seg([](ClientSegment& c) { c.flags = kTcpRst | kTcpAck; })),
      refused("ClientRstNoAck", "the client's own RST without ACK",
              seg([](ClientSegment& c) { c.flags = kTcpRst; })),
      refused("BareSyn", "a bare SYN on a reused tuple is a new connection: classified like one",
              seg([](ClientSegment& c) {
                c.flags = kTcpSyn;
                c.tcp = TcpSegment{};
              })),
      refused("LanServerSynAck", "a LAN server's SYN-ACK is still in its handshake",
              seg([](ClientSegment& c) { c.flags = kTcpSyn | kTcpAck; })),
      refused("DataOffsetBelowFive", "doff 4 is not a TCP header",
              seg([](ClientSegment& c) { c.tcp.doff = 4; })),
      refused("DataOffsetBeyondPacket", "doff 15 (60 bytes) in a 32-byte segment", seg([](ClientSegment& c) {
                c.tcp.payload = {};
                c.tcp.doff = 15;
              })),
      refused("DataOffsetIntoPadding",
              "doff 8 reaches into Ethernet padding beyond the IP length: the header is not in the packet",
              seg([](ClientSegment& c) {
                c.flags = kTcpAck;
                c.tcp = TcpSegment{.doff = 8};
                c.padding = 12;
              })),
      refused("Ipv4Options", "IPv4 with options (ihl 6)", seg([](ClientSegment& c) { c.ip4.ihl = 6; })),
      refused("Ipv4FirstFragment",
              "an IPv4 first fragment (MF set): keyed with its ports, but no RST from a fragment",
              seg([](ClientSegment& c) { c.ip4.frag_off = 0x2000; })),
      refused("Ipv6ExtensionHeader", "IPv6 with a hop-by-hop header before TCP",
              [] {
                ClientSegment c = v6_segment();
                c.hop_by_hop = true;
                return c;
              }()),

      // ---- idle expiry per protocol (the uplink is fine) ----
      {.name = "TcpIdle",
       .description = "a TCP flow idle beyond flow_timeout_tcp_s is classified again, not reset",
       .tcp_timeout_s = 2,
       .wanb = wanb_up,
       .flow_age_ns = 3 * kSecondNs,
       .outcome = Outcome::Classified,
       .counts = kCountedIdle},
      {.name = "TcpKeptByItsOwnTimeout",
       .description = "the UDP and other timeouts do not expire a TCP flow",
       .udp_timeout_s = 2,
       .other_timeout_s = 2,
       .wanb = wanb_up,
       .flow_age_ns = 3 * kSecondNs,
       .outcome = Outcome::Held,
       .counts = kNoCounts},
      {.name = "TcpTimeoutZero",
       .description = "flow_timeout_tcp_s 0 never expires: a day-old flow holds",
       .tcp_timeout_s = 0,
       .wanb = wanb_up,
       .flow_age_ns = 86400 * kSecondNs,
       .outcome = Outcome::Held,
       .counts = kNoCounts},
      {.name = "UdpIdle",
       .description = "a UDP flow idle beyond flow_timeout_udp_s",
       .other = udp_pkt(kHostA, 5000, kDns, 53),
       .udp_timeout_s = 2,
       .wanb = wanb_up,
       .flow_age_ns = 3 * kSecondNs,
       .outcome = Outcome::Classified,
       .counts = kCountedIdle},
      {.name = "UdpKeptByItsOwnTimeout",
       .description = "the TCP timeout does not expire a UDP flow",
       .other = udp_pkt(kHostA, 5000, kDns, 53),
       .tcp_timeout_s = 2,
       .other_timeout_s = 2,
       .wanb = wanb_up,
       .flow_age_ns = 3 * kSecondNs,
       .outcome = Outcome::Held,
       .counts = kNoCounts},
      {.name = "OtherIdle",
       .description = "ICMP follows flow_timeout_s",
       .other = icmp_pkt(kHostA, kWeb),
       .other_timeout_s = 2,
       .wanb = wanb_up,
       .flow_age_ns = 3 * kSecondNs,
       .outcome = Outcome::Classified,
       .counts = kCountedIdle},
      {.name = "OtherKeptByItsOwnTimeout",
       .description = "the TCP and UDP timeouts do not expire an ICMP flow",
       .other = icmp_pkt(kHostA, kWeb),
       .tcp_timeout_s = 2,
       .udp_timeout_s = 2,
       .wanb = wanb_up,
       .flow_age_ns = 3 * kSecondNs,
       .outcome = Outcome::Held,
       .counts = kNoCounts},
  };
}

// The one's-complement sum of n bytes, folded (not inverted): a header whose checksum is right sums
// to 0xffff. Written here rather than taken from the packet builder or the program.
uint16_t folded_sum(const uint8_t* p, size_t n, uint32_t sum = 0) {
  for (size_t i = 0; i < n; i++) {
    sum += (i % 2 == 0) ? static_cast<uint32_t>(p[i]) << 8 : p[i];
  }
  while (sum > 0xffff) {
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<uint16_t>(sum);
}

uint16_t be16_at(const Bytes& b, size_t at) { return static_cast<uint16_t>(b[at] << 8 | b[at + 1]); }
uint32_t be32_at(const Bytes& b, size_t at) {
  return static_cast<uint32_t>(be16_at(b, at)) << 16 | be16_at(b, at + 2);
}

// Checks `out` is exactly the RST that answers the client's segment `in`, field by field.
void expect_rst(const Bytes& in, const Bytes& out, const ClientSegment& seg) {
  const bool v6 = is_v6(seg.src);
  const size_t l2 = seg.l3_only ? 0 : 14 + 4 * seg.tags.size();
  const size_t ip_len = v6 ? 40 : 20;
  const size_t l4 = l2 + ip_len;
  ASSERT_EQ(out.size(), l4 + 20) << "the RST is its headers, nothing after (data cut off)";
  if (!seg.l3_only) {
    EXPECT_TRUE(std::equal(out.begin(), out.begin() + 6, in.begin() + 6)) << "to the client's MAC";
    EXPECT_TRUE(std::equal(out.begin() + 6, out.begin() + 12, in.begin())) << "from the router's MAC";
    EXPECT_TRUE(std::equal(out.begin() + 12, out.begin() + static_cast<std::ptrdiff_t>(l2), in.begin() + 12))
        << "VLAN tags and ethertype as they were";
  }
  const size_t in_ip_len = v6 ? 40 : static_cast<size_t>(in[l2] & 0x0f) * 4;
  const size_t in_l4 = l2 + in_ip_len;
  Bytes pseudo;
  if (v6) {
    EXPECT_EQ(be32_at(out, l2), 6u << 28) << "version 6, traffic class and flow label 0";
    EXPECT_EQ(be16_at(out, l2 + 4), 20u) << "payload length";
    EXPECT_EQ(out[l2 + 6], IPPROTO_TCP);
    EXPECT_EQ(out[l2 + 7], 64) << "hop limit";
    EXPECT_TRUE(std::equal(out.begin() + l2 + 8, out.begin() + l2 + 24, in.begin() + l2 + 24))
        << "from the server";
    EXPECT_TRUE(std::equal(out.begin() + l2 + 24, out.begin() + l2 + 40, in.begin() + l2 + 8))
        << "to the client";
    pseudo.assign(out.begin() + l2 + 8, out.begin() + l2 + 40);
    put32(pseudo, 20);
    put32(pseudo, IPPROTO_TCP);
  } else {
    EXPECT_EQ(out[l2], 0x45) << "IPv4, no options";
    EXPECT_EQ(out[l2 + 1], 0) << "tos";
    EXPECT_EQ(be16_at(out, l2 + 2), 40u) << "total length";
    EXPECT_EQ(be16_at(out, l2 + 4), 0u) << "id";
    EXPECT_EQ(be16_at(out, l2 + 6), 0x4000u) << "DF, offset 0";
    EXPECT_EQ(out[l2 + 8], 64) << "TTL";
    EXPECT_EQ(out[l2 + 9], IPPROTO_TCP);
    EXPECT_TRUE(std::equal(out.begin() + l2 + 12, out.begin() + l2 + 16, in.begin() + l2 + 16))
        << "from the server";
    EXPECT_TRUE(std::equal(out.begin() + l2 + 16, out.begin() + l2 + 20, in.begin() + l2 + 12))
        << "to the client";
    EXPECT_EQ(folded_sum(&out[l2], 20), 0xffff) << "IPv4 header checksum";
    pseudo.assign(out.begin() + l2 + 12, out.begin() + l2 + 20);
    put16(pseudo, IPPROTO_TCP);
    put16(pseudo, 20);
  }
  EXPECT_EQ(be16_at(out, l4), be16_at(in, in_l4 + 2)) << "source port: the server's";
  EXPECT_EQ(be16_at(out, l4 + 2), be16_at(in, in_l4)) << "destination port: the client's";
  EXPECT_EQ(be32_at(out, l4 + 4), kClientAck) << "seq = the segment's ack (the client's RCV.NXT)";
  EXPECT_EQ(be32_at(out, l4 + 8), 0u) << "ack";
  EXPECT_EQ(out[l4 + 12], 5 << 4) << "data offset 5, no options";
  EXPECT_EQ(out[l4 + 13], kTcpRst) << "RST alone";
  EXPECT_EQ(be16_at(out, l4 + 14), 0u) << "window";
  EXPECT_EQ(be16_at(out, l4 + 18), 0u) << "urgent pointer";
  EXPECT_EQ(folded_sum(&out[l4], 20, folded_sum(pseudo.data(), pseudo.size())), 0xffff)
      << "TCP checksum over the pseudo header";
}

class LanIngressStale : public ::testing::TestWithParam<StaleRow> {};

TEST_P(LanIngressStale, Row) {
  const StaleRow& row = GetParam();
  SCOPED_TRACE(row.description);
  LanProgram prog(row.seg.l3_only);
  ASSERT_TRUE(prog.ok()) << "loading lan_ingress: " << strerror(-prog.load_err()) << " (run as root)";
  for (const UplinkRow& u : {UplinkRow{kWan}, row.wanb, UplinkRow{kLte}}) {
    ASSERT_EQ(prog.set_uplink(u), 0);
  }
  for (const PolicyRow& p : default_policies()) {
    ASSERT_EQ(prog.set_policy(p), 0);
  }
  ASSERT_EQ(prog.set_rule(0, R(kWanOnly)), 0);
  ASSERT_EQ(prog.set_cfg(classifier_cfg{kMmxMask, 1, kDefaultMark, row.other_timeout_s, row.tcp_timeout_s,
                                        row.udp_timeout_s, row.flags, 0}),
            0);
  const Pkt p = row.other ? *row.other : client_segment(row.seg);
  const bool tcp = p.key.proto == IPPROTO_TCP;
  ASSERT_EQ(
      prog.add_flow(
          FlowRow{
              .key = p.key, .uplink = kWanb, .generation = row.flow_generation, .age_ns = row.flow_age_ns},
          monotonic_ns()),
      0);
  if (tcp) {
    ASSERT_EQ(prog.add_seen(p.key, 0x12345), 0);
  }

  const RunResult r = run_tc(prog.prog_fd(), p.frame, kLanIf, 0);
  ASSERT_EQ(r.err, 0) << strerror(r.err);
  const std::optional<flow_value> flow = prog.flow(p.key);
  switch (row.outcome) {
    case Outcome::Reset:
      EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_REDIRECT));
      expect_rst(p.frame, r.data_out, row.seg);
      EXPECT_FALSE(flow.has_value()) << "the flows entry of a reset connection is gone";
      EXPECT_FALSE(prog.has_seen(p.key)) << "and its tcp_seen entry";
      break;
    case Outcome::Classified:
      EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
      EXPECT_EQ(r.data_out, p.frame) << "the packet passes unchanged";
      EXPECT_EQ(r.mark, mark_of(kWan)) << "classified again: the rule's policy now says wan";
      ASSERT_TRUE(flow.has_value());
      EXPECT_EQ(flow->uplink_id, kWan);
      EXPECT_EQ(flow->generation, 1u);
      if (tcp) {
        EXPECT_EQ(prog.has_seen(p.key), row.counts.refused == 0)
            << "a refused stale segment drops tcp_seen with the flow; otherwise it stays";
      }
      break;
    case Outcome::Held:
      EXPECT_EQ(r.retval, static_cast<uint32_t>(TC_ACT_OK));
      EXPECT_EQ(r.data_out, p.frame) << "the packet passes unchanged";
      EXPECT_EQ(r.mark, mark_of(kWanb)) << "the flow's own mark";
      ASSERT_TRUE(flow.has_value());
      EXPECT_EQ(flow->uplink_id, kWanb);
      EXPECT_EQ(flow->generation, row.flow_generation);
      if (tcp) {
        EXPECT_TRUE(prog.has_seen(p.key));
      }
      break;
  }
  const flow_counters c = prog.stale_counters();
  EXPECT_EQ((Counts{c.created, c.stale_tcp_reset, c.stale_tcp_refused, c.reclassified, c.idle_reclassified}),
            row.counts);
}

INSTANTIATE_TEST_SUITE_P(Rows, LanIngressStale, ::testing::ValuesIn(StaleRows()),
                         [](const ::testing::TestParamInfo<StaleRow>& info) {
                           return std::string(info.param.name);
                         });

// Counters add up over packets: a new flow counts `created`, a held one nothing, and after wanb
// goes down the next segment is reset and the one after (no entry left) is a new flow again.
TEST(LanIngressStaleSequence, CountersOverAConnection) {
  LanProgram prog;
  ASSERT_TRUE(prog.ok());
  for (const UplinkRow& u : default_uplinks()) {
    ASSERT_EQ(prog.set_uplink(u), 0);
  }
  for (const PolicyRow& p : default_policies()) {
    ASSERT_EQ(prog.set_policy(p), 0);
  }
  ASSERT_EQ(prog.set_rule(0, R(kWanbOnly)), 0);
  ASSERT_EQ(prog.set_cfg(cfg_of(kMmxMask, 1, kFlowTimeoutS, UPLINKD_CFG_RESET_STALE_TCP)), 0);
  const Pkt syn = client_segment({.flags = kTcpSyn, .tcp = {}});
  const Pkt data = client_segment({});

  EXPECT_EQ(run_tc(prog.prog_fd(), syn.frame, kLanIf, 0).mark, mark_of(kWanb));
  EXPECT_EQ(run_tc(prog.prog_fd(), data.frame, kLanIf, 0).retval, static_cast<uint32_t>(TC_ACT_OK));
  ASSERT_EQ(prog.set_uplink({kWanb, UPLINK_STATE_OFFLINE, 2}), 0);  // the daemon: down, generation bumped
  EXPECT_EQ(run_tc(prog.prog_fd(), data.frame, kLanIf, 0).retval, static_cast<uint32_t>(TC_ACT_REDIRECT));
  // The client's socket is gone; a retransmission it had in flight finds no entry: a new flow,
  // classified by wanb-only's last_resort (no member online), never a second RST.
  ASSERT_EQ(prog.set_policy(both_families(kWanbOnly, last_resort_entry(kUnreachableMark))), 0);
  const RunResult again = run_tc(prog.prog_fd(), data.frame, kLanIf, 0);
  EXPECT_EQ(again.retval, static_cast<uint32_t>(TC_ACT_OK));
  EXPECT_EQ(again.mark, kUnreachableMark);
  const flow_counters c = prog.stale_counters();
  EXPECT_EQ((Counts{c.created, c.stale_tcp_reset, c.stale_tcp_refused, c.reclassified, c.idle_reclassified}),
            (Counts{2, 1, 0, 0, 0}));
}

// The redirect goes to skb->ifindex; in a test run that is ctx_in.ifindex, which must name an
// existing device: 1 (the loopback, in every namespace) works, an unused index is refused.
TEST(LanIngressStaleCtx, IfindexMustNameADevice) {
  LanProgram prog;
  ASSERT_TRUE(prog.ok());
  __sk_buff ctx_in{}, ctx_out{};
  ctx_in.ifindex = 1;
  TestRun run = test_run_once(prog.prog_fd(), arp_pkt().frame, ctx_in, &ctx_out);
  EXPECT_EQ(run.err, 0) << strerror(run.saved_errno);
  ctx_in.ifindex = 0x7ffffff0;
  run = test_run_once(prog.prog_fd(), arp_pkt().frame, ctx_in, &ctx_out);
  EXPECT_NE(run.err, 0);
  EXPECT_EQ(run.saved_errno, ENODEV);
}

// The stale path (answer_stale_tcp is a global function, verified once) keeps the program far
// below the 1M-instruction limit on the l3_only and Ethernet builds alike.
TEST(LanIngressProgram, StaleResetVerifies) {
  for (bool l3_only : {false, true}) {
    LanProgram prog(l3_only);
    ASSERT_TRUE(prog.ok()) << strerror(-prog.load_err());
    std::printf("lan_ingress (%s) verified_insns: %u\n", l3_only ? "l3_only" : "ethernet",
                verified_insns(prog.prog_fd()));
  }
}

}  // namespace
