// Writes compiled classifier tables (policy/rule_tables.h) into the maps of the bit-vector classifier
// (maps/uplinkd_maps.h, "Bit-vector classifier tables"): the table set rule_tbl_sel does not name is
// emptied and rewritten, then rule_tbl_sel flips to it in one update, so a packet is classified by the
// old set or the new one, never a mix. Header-only over libbpf's syscall wrappers, so the BPF fixtures
// and benches (which link libbpf only) write tables exactly as the daemon does.
//
// The set being rewritten is the one the previous flip retired; a program that looked it up before
// that flip finished long ago (a tc program runs for microseconds; flips are reloads apart).
#pragma once

#include <bpf/bpf.h>

#include <cerrno>
#include <cstdint>
#include <vector>

#include "maps/uplinkd_maps.h"
#include "policy/rule_tables.h"

namespace uplinkd::datapath {

struct RuleTableFds {
  int sel = -1, tbl = -1, ports = -1, addr = -1, iface = -1;
  int ext = -1;  // rule_tbl_ext; -1 (an object without it) writes none
};

namespace rule_table_detail {

inline int err_or_zero(int rc) { return rc == 0 ? 0 : (errno != 0 ? -errno : -EIO); }

// Deletes every key of `fd` (a trie or hash keyed by rule_addr_key / rule_iface_key) whose set is `set`.
template <typename Key, typename SetOf>
int delete_set_entries(int fd, uint32_t set, SetOf set_of) {
  std::vector<Key> doomed;
  Key key{}, next{};
  const Key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (set_of(next) == set) doomed.push_back(next);
    key = next;
    prev = &key;
  }
  for (const Key& k : doomed) {
    if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) return -errno;
  }
  return 0;
}

inline int write_ports(int fd, uint32_t set, const policy::RuleTables& t) {
  for (uint32_t dir = 0; dir < 2; ++dir) {
    for (uint32_t k = 0; k < t.ports[dir].size(); ++k) {
      const uint32_t slot = UPLINKD_RULE_PORT_SLOT(set, dir, k);
      if (int rc = err_or_zero(bpf_map_update_elem(fd, &slot, &t.ports[dir][k], BPF_ANY)); rc != 0) return rc;
    }
  }
  return 0;
}

inline int write_prefixes(int fd, uint32_t set, const policy::RuleTables& t) {
  for (const auto& p : t.prefixes) {
    rule_addr_key key{};
    key.prefixlen = 32U + p.prefixlen;
    key.set = static_cast<uint8_t>(set);
    key.dir = p.dir;
    key.family = p.family;
    for (int i = 0; i < 16; ++i) key.addr[i] = p.addr[i];
    if (int rc = err_or_zero(bpf_map_update_elem(fd, &key, &p.rules, BPF_ANY)); rc != 0) return rc;
  }
  return 0;
}

inline int write_ifaces(int fd, uint32_t set, const policy::RuleTables& t) {
  for (const auto& i : t.ifaces) {
    const rule_iface_key key{set, i.ifindex};
    if (int rc = err_or_zero(bpf_map_update_elem(fd, &key, &i.rules, BPF_ANY)); rc != 0) return rc;
  }
  return 0;
}

}  // namespace rule_table_detail

// The set packets are classified with now (0 when rule_tbl_sel cannot be read).
inline rule_tbl_select active_rule_tables(int sel_fd) {
  const uint32_t zero = 0;
  rule_tbl_select sel{};
  if (bpf_map_lookup_elem(sel_fd, &zero, &sel) != 0) return rule_tbl_select{};
  return sel;
}

// Empties the set packets do not use now and writes `t` into it; packets keep using the active set.
// Returns the set written (0 or 1), or -errno.
inline int write_inactive_rule_tables(const RuleTableFds& fds, const policy::RuleTables& t) {
  using namespace rule_table_detail;
  const uint32_t next = (active_rule_tables(fds.sel).active & 1U) ^ 1U;
  int rc = delete_set_entries<rule_addr_key>(fds.addr, next,
                                             [](const rule_addr_key& k) { return uint32_t{k.set}; });
  if (rc == 0)
    rc = delete_set_entries<rule_iface_key>(fds.iface, next, [](const rule_iface_key& k) { return k.set; });
  if (rc == 0) rc = write_ports(fds.ports, next, t);
  if (rc == 0) rc = write_prefixes(fds.addr, next, t);
  if (rc == 0) rc = write_ifaces(fds.iface, next, t);
  if (rc == 0 && fds.ext >= 0) rc = err_or_zero(bpf_map_update_elem(fds.ext, &next, &t.ext, BPF_ANY));
  if (rc == 0) rc = err_or_zero(bpf_map_update_elem(fds.tbl, &next, t.arrays.get(), BPF_ANY));
  return rc != 0 ? rc : static_cast<int>(next);
}

// Makes `set` the one packets use: one update of rule_tbl_sel. 0 or -errno.
inline int flip_rule_tables(const RuleTableFds& fds, uint32_t set) {
  rule_tbl_select sel = active_rule_tables(fds.sel);
  sel.active = set & 1U;
  sel.generation++;
  const uint32_t zero = 0;
  return rule_table_detail::err_or_zero(bpf_map_update_elem(fds.sel, &zero, &sel, BPF_ANY));
}

// Writes `t` into the inactive set and flips to it. Returns 0, or -errno with the active set
// unchanged (a failed write never becomes live).
inline int write_rule_tables(const RuleTableFds& fds, const policy::RuleTables& t) {
  const int set = write_inactive_rule_tables(fds, t);
  return set < 0 ? set : flip_rule_tables(fds, static_cast<uint32_t>(set));
}

}  // namespace uplinkd::datapath
