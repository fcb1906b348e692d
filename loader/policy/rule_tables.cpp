// How each table is compiled; see rule_tables.h and bpf/lib/rule_match.h for what they mean.
#include "policy/rule_tables.h"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

namespace uplinkd::policy {
namespace {

constexpr int kFamilies[] = {4, 6};

void bitmap_or(rule_bitmap& into, const rule_bitmap& b) {
  for (int w = 0; w < UPLINKD_RULE_WORDS; ++w) into.w[w] |= b.w[w];
}

unsigned max_prefixlen(int family) { return family == 6 ? 128U : 32U; }

// addr with the bits past prefixlen cleared.
std::array<uint8_t, 16> masked(const uint8_t* addr, unsigned prefixlen) {
  std::array<uint8_t, 16> out{};
  for (unsigned byte = 0; byte < 16; ++byte) {
    const unsigned first_bit = byte * 8;
    if (prefixlen >= first_bit + 8) {
      out[byte] = addr[byte];
    } else if (prefixlen > first_bit) {
      out[byte] = static_cast<uint8_t>(addr[byte] & (0xFFU << (8 - (prefixlen - first_bit))));
    }
  }
  return out;
}

// A rule whose set_id no set slot can hold matches nothing (the datapath's lookup of that slot fails).
bool can_match(const rule_entry& r) { return r.set_id <= UPLINKD_MAX_SETS; }

void compile_family_proto(const std::vector<rule_entry>& rules, rule_tbl& t) {
  for (uint32_t i = 0; i < rules.size(); ++i) {
    const rule_entry& r = rules[i];
    if (!can_match(r)) continue;
    if (r.family == 0 || r.family == 4) bitmap_set(t.family[0], i);
    if (r.family == 0 || r.family == 6) bitmap_set(t.family[1], i);
    for (unsigned p = 0; p < 256; ++p) {
      if (r.proto == 0 || r.proto == p) bitmap_set(t.proto[p], i);
    }
  }
}

void compile_sets(const std::vector<rule_entry>& rules, rule_tbl& t) {
  for (uint32_t i = 0; i < rules.size(); ++i) {
    const rule_entry& r = rules[i];
    if (r.set_id == 0 || !can_match(r)) continue;
    t.rule_set[i] = r.set_id;
    bitmap_set(t.set_rules, i);
    bitmap_set(t.by_set[r.set_id - 1], i);
  }
}

std::vector<RuleTables::Iface> compile_ifaces(const std::vector<rule_entry>& rules, rule_tbl& t) {
  std::map<uint32_t, rule_bitmap> by_ifindex;
  for (uint32_t i = 0; i < rules.size(); ++i) {
    if (rules[i].src_ifindex == 0) {
      bitmap_set(t.any_iface, i);
    } else {
      bitmap_set(by_ifindex[rules[i].src_ifindex], i);
    }
  }
  std::vector<RuleTables::Iface> out;
  for (auto& [ifindex, bits] : by_ifindex) {
    bitmap_or(bits, t.any_iface);
    out.push_back({ifindex, bits});
  }
  return out;
}

const port_range* port_list(const rule_entry& r, int dir, unsigned* n) {
  *n = std::min<unsigned>(dir == UPLINKD_RULE_DIR_SRC ? r.n_sport : r.n_dport, UPLINKD_RULE_MAX_PORTS);
  return dir == UPLINKD_RULE_DIR_SRC ? r.sport : r.dport;
}

// Elementary intervals: the boundaries are 0 and every range's lo and hi + 1; between two
// boundaries every rule's verdict is the same, so the interval's bitmap is that of its first port.
void compile_ports(const std::vector<rule_entry>& rules, int dir, rule_tbl& t,
                   std::vector<rule_bitmap>& out) {
  std::vector<uint32_t> starts{0};
  for (const rule_entry& r : rules) {
    unsigned n = 0;
    const port_range* list = port_list(r, dir, &n);
    for (unsigned k = 0; k < n; ++k) {
      if (list[k].lo > list[k].hi) continue;
      starts.push_back(list[k].lo);
      if (list[k].hi < 0xFFFFU) starts.push_back(uint32_t{list[k].hi} + 1);
    }
  }
  std::sort(starts.begin(), starts.end());
  starts.erase(std::unique(starts.begin(), starts.end()), starts.end());
  out.assign(starts.size(), rule_bitmap{});
  for (size_t k = 0; k < starts.size(); ++k) t.port_start[dir][k] = starts[k];
  // Each range sets its rule's bit in the intervals it spans, found from its lo (itself a boundary):
  // linear in what the ranges cover, not intervals × rules (a reload runs on the event loop).
  for (uint32_t i = 0; i < rules.size(); ++i) {
    unsigned n = 0;
    const port_range* list = port_list(rules[i], dir, &n);
    if (n == 0) {
      for (auto& interval : out) bitmap_set(interval, i);
      continue;
    }
    for (unsigned j = 0; j < n; ++j) {
      if (list[j].lo > list[j].hi) continue;
      auto k =
          static_cast<size_t>(std::lower_bound(starts.begin(), starts.end(), list[j].lo) - starts.begin());
      for (; k < starts.size() && starts[k] <= list[j].hi; ++k) bitmap_set(out[k], i);
    }
  }
  for (size_t k = starts.size(); k < UPLINKD_PORT_SEARCH_SLOTS; ++k) t.port_start[dir][k] = UPLINKD_PORT_PAST;
  t.n_port_starts[dir] = static_cast<uint32_t>(starts.size());
}

void compile_no_ports(const std::vector<rule_entry>& rules, rule_tbl& t) {
  for (uint32_t i = 0; i < rules.size(); ++i) {
    if (rules[i].n_sport == 0 && rules[i].n_dport == 0) bitmap_set(t.no_ports, i);
  }
}

struct ListEntry {
  uint32_t rule;
  std::array<uint8_t, 16> net;
  unsigned len;
};

// The entries of family `family` in every rule's `dir` list, masked, and the rules with an empty list.
std::vector<ListEntry> list_entries(const std::vector<rule_entry>& rules, int dir, int family,
                                    rule_bitmap* empty) {
  std::vector<ListEntry> out;
  for (uint32_t i = 0; i < rules.size(); ++i) {
    const rule_entry& r = rules[i];
    const unsigned n =
        std::min<unsigned>(dir == UPLINKD_RULE_DIR_SRC ? r.n_src : r.n_dst, UPLINKD_RULE_MAX_ADDRS);
    const addr_match* list = dir == UPLINKD_RULE_DIR_SRC ? r.src : r.dst;
    if (n == 0) bitmap_set(*empty, i);
    for (unsigned k = 0; k < n; ++k) {
      if (list[k].family != family) continue;
      const unsigned len = std::min<unsigned>(list[k].prefixlen, max_prefixlen(family));
      out.push_back({i, masked(list[k].addr, len), len});
    }
  }
  return out;
}

// Prefix closure: each distinct prefix (and the root) gets the empty-list rules and every rule with
// an entry covering it, since the trie's lookup returns the longest prefix only. A prefix's covering
// entries are found by masking it to each prefix length in use and looking that up: prefixes ×
// lengths in use. Comparing every prefix with every entry took about 0.3 s for 256 rules of 16
// prefixes each (`rule_reload_bench`), and a reload runs on the event loop.
void compile_addresses(const std::vector<rule_entry>& rules, int dir, int family,
                       std::vector<RuleTables::Prefix>& out) {
  rule_bitmap empty{};
  const std::vector<ListEntry> entries = list_entries(rules, dir, family, &empty);
  // The rules listing exactly (len, net); the root is always a prefix of the table.
  std::map<std::pair<unsigned, std::array<uint8_t, 16>>, rule_bitmap> listed{{{0, {}}, rule_bitmap{}}};
  std::set<unsigned> lengths{0};
  for (const ListEntry& e : entries) {
    bitmap_set(listed[{e.len, e.net}], e.rule);
    lengths.insert(e.len);
  }
  for (const auto& [prefix, unused] : listed) {
    RuleTables::Prefix p;
    p.dir = static_cast<uint8_t>(dir);
    p.family = static_cast<uint8_t>(family);
    p.prefixlen = static_cast<uint8_t>(prefix.first);
    p.addr = prefix.second;
    p.rules = empty;
    for (unsigned len : lengths) {
      if (len > prefix.first) break;
      if (auto it = listed.find({len, masked(p.addr.data(), len)}); it != listed.end())
        bitmap_or(p.rules, it->second);
    }
    out.push_back(p);
  }
}

}  // namespace

namespace {

// What every port interval of a direction includes: the rules without a port list there.
rule_bitmap rules_any_port(const std::vector<rule_bitmap>& intervals) {
  rule_bitmap all{};
  if (intervals.empty()) return all;
  all = intervals.front();
  for (const rule_bitmap& b : intervals) {
    for (int w = 0; w < UPLINKD_RULE_WORDS; ++w) all.w[w] &= b.w[w];
  }
  return all;
}

// The root entry (/0) of a direction and family: the rules accepting every address of it.
rule_bitmap rules_any_address(const std::vector<RuleTables::Prefix>& prefixes, int dir, int family) {
  for (const auto& p : prefixes) {
    if (p.dir == dir && p.family == family && p.prefixlen == 0) return p.rules;
  }
  return rule_bitmap{};
}

// A direction's port boundaries in the 64-slot table when they fit there.
void compile_small_ports(const rule_tbl& arrays, int dir, rule_tbl_ext& ext) {
  const uint32_t n = arrays.n_port_starts[dir];
  if (n == 0 || n > UPLINKD_PORT_SMALL_SLOTS) return;
  for (uint32_t k = 0; k < UPLINKD_PORT_SMALL_SLOTS; ++k)
    ext.port_start_small[dir][k] = k < n ? arrays.port_start[dir][k] : UPLINKD_PORT_PAST;
  ext.small_ports[dir] = 1;
}

rule_tbl_ext compile_ext(const RuleTables& t) {
  rule_tbl_ext ext{};
  for (int dir : {UPLINKD_RULE_DIR_SRC, UPLINKD_RULE_DIR_DST}) {
    ext.any_port[dir] = rules_any_port(t.ports[dir]);
    ext.any_addr[dir][0] = rules_any_address(t.prefixes, dir, 4);
    ext.any_addr[dir][1] = rules_any_address(t.prefixes, dir, 6);
    compile_small_ports(*t.arrays, dir, ext);
  }
  return ext;
}

}  // namespace

RuleTables compile_rule_tables(const std::vector<rule_entry>& rules) {
  if (rules.size() > UPLINKD_MAX_RULES) {
    throw std::invalid_argument(std::to_string(rules.size()) + " rules; the classifier holds " +
                                std::to_string(UPLINKD_MAX_RULES));
  }
  RuleTables t;
  *t.arrays = rule_tbl{};
  compile_family_proto(rules, *t.arrays);
  compile_sets(rules, *t.arrays);
  compile_no_ports(rules, *t.arrays);
  t.ifaces = compile_ifaces(rules, *t.arrays);
  for (int dir : {UPLINKD_RULE_DIR_SRC, UPLINKD_RULE_DIR_DST}) {
    compile_ports(rules, dir, *t.arrays, t.ports[dir]);
    for (int family : kFamilies) compile_addresses(rules, dir, family, t.prefixes);
  }
  t.ext = compile_ext(t);
  return t;
}

}  // namespace uplinkd::policy
