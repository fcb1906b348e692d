// The bit-vector classifier's tables (maps/uplinkd_maps.h, "Bit-vector classifier tables"), compiled
// from the rule_entry list the daemon writes to `rules`. Rule i is bit i; each table maps a field
// value to the bitmap of the rules that accept it, so the datapath ANDs one bitmap per field and
// takes the first set bit (bpf/lib/rule_match.h states the semantics). Pure logic, no kernel access:
// loader/datapath/rule_table_maps.h writes the result into the inactive table set and flips to it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "maps/uplinkd_maps.h"

namespace uplinkd::policy {

struct RuleTables {
  // family, proto, any_iface, no_ports, the set arrays and the port boundaries (heap: 75 KB).
  std::unique_ptr<rule_tbl> arrays = std::make_unique<rule_tbl>();
  // ports[dir][k]: the bitmap of elementary interval k (k < arrays->n_port_starts[dir]).
  std::array<std::vector<rule_bitmap>, 2> ports;

  struct Iface {
    uint32_t ifindex = 0;
    rule_bitmap rules{};  // the rules of that src_ifindex, ORed with any_iface
  };
  std::vector<Iface> ifaces;

  // One rule_tbl_addr entry per distinct prefix of a direction and family, and a root (prefixlen 0)
  // for each; `rules` is already closed over the shorter prefixes covering it and the empty lists.
  struct Prefix {
    uint8_t dir = 0;     // UPLINKD_RULE_DIR_*
    uint8_t family = 0;  // 4 or 6
    uint8_t prefixlen = 0;
    std::array<uint8_t, 16> addr{};  // bits past prefixlen zero; IPv4 in the first 4 bytes
    rule_bitmap rules{};
  };
  std::vector<Prefix> prefixes;

  // rule_tbl_ext: per field, the rules that accept any value of it (what the classifier may skip a
  // lookup for): the intersection of a direction's port intervals, the root prefix of each direction
  // and family; and the port boundaries in the small search table when they fit.
  rule_tbl_ext ext{};
};

// Throws std::invalid_argument when there are more than UPLINKD_MAX_RULES rules. Entries the compiler
// (rule_compiler.h) never produces are given the datapath's old meaning: list counts past the array
// are clamped, a prefix longer than its family is clamped, an address of another family in a list is
// ignored for packets of this one, a range with lo > hi matches nothing, and a set_id past
// UPLINKD_MAX_SETS makes the rule match nothing.
RuleTables compile_rule_tables(const std::vector<rule_entry>& rules);

inline bool bitmap_test(const rule_bitmap& b, uint32_t bit) {
  return ((b.w[bit / 64] >> (bit % 64)) & 1U) != 0;
}
inline void bitmap_set(rule_bitmap& b, uint32_t bit) { b.w[bit / 64] |= uint64_t{1} << (bit % 64); }

}  // namespace uplinkd::policy
