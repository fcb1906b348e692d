// The classifier benches' rule set (classifier_bench, bitvec_bench): two uplinks with a one-member
// policy each, and "full" rules whose address and port lists are all eight entries long and fail
// only at their destination list, the most expensive place for a linear walk to fail; the last
// rule of a set matches instead. Both benches time the same rules, so their rows compare.
#pragma once

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <utility>

#include "bench/bench_util.h"
#include "maps/uplinkd_maps.h"

namespace uplinkd::bench {

constexpr uint16_t kWan = 1, kLte = 3;
constexpr uint32_t kPolicyWan = 0, kPolicyLte = 1;
constexpr uint32_t kMmxMask = 0x3f00;

inline addr_match v4_cidr(const std::string& addr, uint8_t prefixlen) {
  addr_match m{};
  if (inet_pton(AF_INET, addr.c_str(), m.addr) != 1) throw Failure{"bad address " + addr};
  m.prefixlen = prefixlen;
  m.family = 4;
  return m;
}

// A TCP rule with full lists; `matches`: its destination list is 203.0.113.0/24 (the benches'
// packets) and its policy lte's, else it fails there and its policy is wan's.
inline rule_entry full_rule(bool matches) {
  rule_entry r{};
  r.family = 4;
  r.proto = IPPROTO_TCP;
  r.policy_id = matches ? kPolicyLte : kPolicyWan;
  r.sticky_timeout_s = 600;
  r.n_src = r.n_dst = r.n_sport = r.n_dport = 8;
  for (int i = 0; i < 8; i++) {
    r.src[i] = v4_cidr("10." + std::to_string(i) + ".0.0", i == 0 ? 8 : 16);
    r.dst[i] = v4_cidr("192.0.2." + std::to_string(16 * i), 28);
    r.sport[i] = port_range{static_cast<uint16_t>(i + 1), static_cast<uint16_t>(i + 1)};
    r.dport[i] = port_range{static_cast<uint16_t>(i + 1), static_cast<uint16_t>(i + 1)};
  }
  r.sport[7] = port_range{1024, 65535};
  r.dport[7] = port_range{443, 443};
  if (matches) {
    r.n_dst = 1;
    r.dst[0] = v4_cidr("203.0.113.0", 24);
  }
  return r;
}

// A policy with `uplink` as its only member.
inline policy_entry one_member(uint16_t uplink) {
  policy_entry p{};
  p.n_members = 1;
  p.threshold[0] = 0xffffffffU;
  p.mark[0] = static_cast<uint32_t>(uplink) << 8;
  p.uplink_id[0] = uplink;
  return p;
}

// Both uplinks online (generation 1, mark id << 8) and each policy's IPv4 and IPv6 slots holding its
// one member: what every classifier bench starts from.
inline void write_uplinks_and_policies(int uplinks_fd, int policies_fd) {
  for (uint16_t id : {kWan, kLte}) {
    uint32_t key = id;
    uplink_record u{};
    u.state = UPLINK_STATE_ONLINE;
    u.generation = 1;
    u.mark = static_cast<uint32_t>(id) << 8;
    check(bpf_map_update_elem(uplinks_fd, &key, &u, BPF_ANY), "uplinks");
  }
  for (auto [id, uplink] : {std::pair{kPolicyWan, kWan}, std::pair{kPolicyLte, kLte}}) {
    const policy_entry p = one_member(uplink);
    for (uint8_t family : {4, 6}) {
      uint32_t slot = UPLINKD_POLICY_SLOT(id, family);
      check(bpf_map_update_elem(policies_fd, &slot, &p, BPF_ANY), "policies");
    }
  }
}

}  // namespace uplinkd::bench
