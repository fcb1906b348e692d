// The classifier fixtures write rules as the daemon does: each entry into `rules` (its actions), and
// the bit-vector tables compiled from the whole list (policy/rule_tables.h) into the inactive table
// set, flipped to (datapath/rule_table_maps.h).
#pragma once

#include <bpf/libbpf.h>

#include <vector>

#include "datapath/rule_table_maps.h"
#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "policy/rule_tables.h"

namespace uplinkd::testing {

inline datapath::RuleTableFds rule_table_fds(const lan_ingress* skel) {
  return {bpf_map__fd(skel->maps.rule_tbl_sel),   bpf_map__fd(skel->maps.rule_tbl),
          bpf_map__fd(skel->maps.rule_tbl_ports), bpf_map__fd(skel->maps.rule_tbl_addr),
          bpf_map__fd(skel->maps.rule_tbl_iface), bpf_map__fd(skel->maps.rule_tbl_ext)};
}

// Writes every entry of `rules` into the `rules` map, then their tables: with `writer` (one per
// skeleton, kept across calls) only what differs from the inactive set, as the daemon does; without,
// a fresh writer's walk and full write. 0 or -errno.
inline int write_rules_and_tables(const lan_ingress* skel, const std::vector<rule_entry>& rules,
                                  datapath::RuleTableWriter* writer = nullptr) {
  for (uint32_t i = 0; i < rules.size(); ++i) {
    if (bpf_map_update_elem(bpf_map__fd(skel->maps.rules), &i, &rules[i], BPF_ANY) != 0) return -errno;
  }
  const policy::RuleTables tables = policy::compile_rule_tables(rules);
  return writer != nullptr ? writer->write(rule_table_fds(skel), tables)
                           : datapath::write_rule_tables(rule_table_fds(skel), tables);
}

}  // namespace uplinkd::testing
