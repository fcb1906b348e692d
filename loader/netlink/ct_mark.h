// The nft rules that copy the uplink bits of a packet's mark into its conntrack entry's mark.
//
// uplinkd's LAN classifier sets the mwan3 mark (under mmx_mask) on skb->mark; nothing else puts
// it on the conntrack entry, which is what deleting a dead uplink's entries by mark needs (mwan3
// did this with CONNMARK --save-mark). One table of uplinkd's own (family inet) holds a
// postrouting chain (type filter, priority mangle) with one rule per uplink mark M:
//
//   meta mark & MASK == M  ct mark & MASK != M  ct mark set ct mark & ~MASK | M
//
// so the ct mark's other bits (a firewall's, a VPN's) are kept, and an entry already carrying M
// is not rewritten on every packet. Bitwise operations take constants only: combining two
// registers needs kernel 6.13, and the floor is 5.15.
//
// Connections that come IN on an uplink (a port forward, a routed IPv6 server on the LAN) must be
// answered by that uplink. TCP ones are remembered by the BPF datapath; for every protocol (UDP
// port forwards above all) a prerouting chain (type filter, priority dstnat + 1, so after the DNAT)
// holds two rules, with a chain inbound_<i> per uplink M_i with device D_i and a chain `answer`:
//
//   ct state new  iifname vmap { D_i : goto inbound_<i>, ... }
//       inbound_<i>: ct mark set ct mark & ~MASK | M_i
//   ct direction reply  goto answer
//       answer: iifname { all uplink devices } return
//               ct mark & MASK == M_i  meta mark set meta mark & ~MASK | M_i  return   (per uplink)
//
// The first tags the connection with its arrival uplink; the second gives its answers, coming from
// the LAN side, that uplink's packet mark before the routing decision, so the fwmark rule sends
// them out of D whatever the LAN classifier chose. Every forwarded packet crosses this chain, and a
// LAN flow's leaves it after two ct tests: one rule per uplink testing device names cost about
// 115-150 ns more per packet at 5,000 packets/s (bench/forward_cpu_bench.sh with
// EXTRA="plain-ctmark plain-ctmark-before"; README, "Forwarding: CPU per packet"). Replies
// arriving on an uplink (to connections the LAN opened) are left alone: marking those would route
// them back by the uplink's table.
//
// Works in the network namespace of the thread that constructs the object (libnftables binds its
// netlink socket there).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct nft_ctx;

namespace uplinkd::netlink {

// One uplink: its mark (non-zero, inside mmx_mask) and its device ("" when not known yet: then
// only the copy rule is installed for it, no inbound rules).
struct UplinkMark {
  uint32_t mark = 0;
  std::string device;
  bool operator==(const UplinkMark&) const = default;
};

class CtMarkRules {
 public:
  // Installs table `inet <table>` in one transaction, replacing a table of the same name left by
  // a previous run that crashed. `table` is an nft identifier (letters, digits, '_', '.', '-',
  // starting with a letter or '_'); every mark is non-zero and inside `mmx_mask`; a device name is
  // at most 15 bytes without quotes, backslashes, blanks or control characters. Throws
  // std::invalid_argument for bad arguments, std::runtime_error with nft's message otherwise.
  CtMarkRules(std::string table, uint32_t mmx_mask, std::vector<UplinkMark> uplinks);
  ~CtMarkRules();  // deletes exactly this table
  CtMarkRules(const CtMarkRules&) = delete;
  CtMarkRules& operator=(const CtMarkRules&) = delete;

  // Replaces the rules with those for `uplinks`, atomically (packets see the old set
  // or the new one, never none). Rebuilds the whole table, so it also brings back a table that
  // someone deleted meanwhile. Throws like the constructor; the old rules stay on failure.
  void update(std::vector<UplinkMark> uplinks);

  [[nodiscard]] const std::string& table() const { return table_; }
  [[nodiscard]] const std::vector<UplinkMark>& uplinks() const { return uplinks_; }

  // The nft commands update() runs (for logs and tests).
  [[nodiscard]] static std::string commands_for(const std::string& table, uint32_t mmx_mask,
                                                const std::vector<UplinkMark>& uplinks);

 private:
  void run(const std::string& commands, const std::string& what);

  std::string table_;
  uint32_t mmx_mask_ = 0;
  std::vector<UplinkMark> uplinks_;
  ::nft_ctx* nft_ = nullptr;
};

}  // namespace uplinkd::netlink
