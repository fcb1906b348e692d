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
// Works in the network namespace of the thread that constructs the object (libnftables binds its
// netlink socket there).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct nft_ctx;

namespace uplinkd::netlink {

class CtMarkRules {
 public:
  // Installs table `inet <table>` in one transaction, replacing a table of the same name left by
  // a previous run that crashed. `table` is an nft identifier (letters, digits, '_', '.', '-',
  // starting with a letter or '_'); every mark is non-zero and inside `mmx_mask`. Throws
  // std::invalid_argument for bad arguments, std::runtime_error with nft's message otherwise.
  CtMarkRules(std::string table, uint32_t mmx_mask, std::vector<uint32_t> uplink_marks);
  ~CtMarkRules();  // deletes exactly this table
  CtMarkRules(const CtMarkRules&) = delete;
  CtMarkRules& operator=(const CtMarkRules&) = delete;

  // Replaces the rules with one per mark in `uplink_marks`, atomically (packets see the old set
  // or the new one, never none). Rebuilds the whole table, so it also brings back a table that
  // someone deleted meanwhile. Throws like the constructor; the old rules stay on failure.
  void update(std::vector<uint32_t> uplink_marks);

  [[nodiscard]] const std::string& table() const { return table_; }
  [[nodiscard]] const std::vector<uint32_t>& marks() const { return marks_; }

  // The nft commands update() runs (for logs and tests).
  [[nodiscard]] static std::string commands_for(const std::string& table, uint32_t mmx_mask,
                                                const std::vector<uint32_t>& uplink_marks);

 private:
  void run(const std::string& commands, const std::string& what);

  std::string table_;
  uint32_t mmx_mask_ = 0;
  std::vector<uint32_t> marks_;
  ::nft_ctx* nft_ = nullptr;
};

}  // namespace uplinkd::netlink
