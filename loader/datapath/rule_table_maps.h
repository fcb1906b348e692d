// Writes compiled classifier tables (policy/rule_tables.h) into the maps of the bit-vector classifier
// (maps/uplinkd_maps.h, "Bit-vector classifier tables"): the table set rule_tbl_sel does not name is
// made to hold exactly the new tables, then rule_tbl_sel flips to it in one update, so a packet is
// classified by the old set or the new one, never a mix. Header-only over libbpf's syscall wrappers,
// so the BPF fixtures and benches (which link libbpf only) write tables exactly as the daemon does.
//
// The set being rewritten is the one the previous flip retired; a program that looked it up before
// that flip finished long ago (a tc program runs for microseconds; flips are reloads apart).
//
// Cost (issue 14 item 7: the event loop never blocks more than 10 ms). RuleTableWriter remembers what
// it last wrote into each set, so a reload writes only the difference between what the inactive set
// holds and what it must hold: keys no longer wanted are deleted, keys whose bitmap changed or that
// are new are written, port slots whose bitmap changed are rewritten. A reload that changes one rule
// is a handful of map operations instead of 16 000. Only when it does not know a set's contents (the
// first write after start or adoption: another process wrote them, or a write that failed midway)
// does it read the set's entries from the address trie and the interface hash, once (with their
// values in batches where the kernel can, else the keys by a key-by-key walk). The changes go
// down in BPF_MAP_*_BATCH calls where the kernel has them for the map type (ARRAY and HASH: 5.6;
// LPM_TRIE: the 5.17 cycle, so not on 5.15), else one syscall per element.
#pragma once

#include <bpf/bpf.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "maps/uplinkd_maps.h"
#include "policy/rule_tables.h"

namespace uplinkd::datapath {

struct RuleTableFds {
  int sel = -1, tbl = -1, ports = -1, addr = -1, iface = -1;
  int ext = -1;  // rule_tbl_ext; -1 (an object without it) writes none
};

// What the last write_inactive did, for benches and tests: counts of map elements touched and where
// the time went (milliseconds, steady clock).
struct RuleWriteStats {
  bool walked = false;  // the set's contents were unknown: its entries were read from the maps first
  uint32_t addr_deleted = 0, addr_written = 0, ports_written = 0, iface_deleted = 0, iface_written = 0;
  double walk_ms = 0, addr_plan_ms = 0, addr_delete_ms = 0, addr_write_ms = 0, ports_ms = 0, iface_ms = 0,
         arrays_ms = 0;
};

namespace rule_table_detail {

inline int err_or_zero(int rc) { return rc == 0 ? 0 : (errno != 0 ? -errno : -EIO); }

// The kernel's internal ENOTSUPP (not in userspace errno.h): what a map type without batch ops returns.
constexpr int kEnotsupp = 524;

// True when a batch call failed because the kernel has no batch op for this map type (5.15's
// LPM_TRIE): the caller then does the same work one element at a time.
inline bool batch_unsupported(int err) {
  return err == EINVAL || err == kEnotsupp || err == EOPNOTSUPP || err == ENOSYS;
}

// Updates keys[i] to values[i] for every i: one BPF_MAP_UPDATE_BATCH, or per element when the kernel
// has none for the map (`batch_ok` is cleared then, so later calls go straight to per element).
// Updates are idempotent, so redoing the elements a refused batch may have written is harmless.
template <typename Key, typename Value>
int update_all(int fd, const std::vector<Key>& keys, const std::vector<Value>& values, bool& batch_ok) {
  if (keys.empty()) return 0;
  if (batch_ok) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
    auto count = static_cast<uint32_t>(keys.size());
    if (bpf_map_update_batch(fd, keys.data(), values.data(), &count, &opts) == 0) return 0;
    if (!batch_unsupported(errno)) return -errno;
    batch_ok = false;
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (int rc = err_or_zero(bpf_map_update_elem(fd, &keys[i], &values[i], BPF_ANY)); rc != 0) return rc;
  }
  return 0;
}

// Deletes every key of `keys`; a key already gone is not an error. One BPF_MAP_DELETE_BATCH when the
// kernel has it for the map; the batch stops at a missing key, so the rest go per element.
template <typename Key>
int delete_all(int fd, const std::vector<Key>& keys, bool& batch_ok) {
  size_t done = 0;
  if (!keys.empty() && batch_ok) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    auto count = static_cast<uint32_t>(keys.size());
    if (bpf_map_delete_batch(fd, keys.data(), &count, &opts) == 0) return 0;
    if (batch_unsupported(errno)) {
      batch_ok = false;
    } else if (errno == ENOENT && count < keys.size()) {
      done = count;  // keys[count] was missing: carry on from there one by one
    } else {
      return -errno;
    }
  }
  for (size_t i = done; i < keys.size(); ++i) {
    if (bpf_map_delete_elem(fd, &keys[i]) != 0 && errno != ENOENT) return -errno;
  }
  return 0;
}

// Every entry of `fd` (a trie or hash keyed by rule_addr_key / rule_iface_key, rule_bitmap values)
// whose set is `set`, with its value, read by BPF_MAP_LOOKUP_BATCH (a few syscalls for the whole
// map). False when the kernel has no batch lookup for the map type or the read failed: the caller
// walks key by key then.
template <typename Key, typename SetOf>
bool read_set_entries(int fd, uint32_t set, SetOf set_of, std::vector<std::pair<Key, rule_bitmap>>& out) {
  constexpr uint32_t kChunk = 1024;  // more than a hash bucket holds, as the hash's batch needs
  std::vector<Key> keys(kChunk);
  std::vector<rule_bitmap> values(kChunk);
  alignas(8) unsigned char in_token[64] = {}, out_token[64] = {};  // a key (trie) or bucket index (hash)
  bool first = true;
  for (;;) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    uint32_t count = kChunk;
    const int rc = bpf_map_lookup_batch(fd, first ? nullptr : in_token, out_token, keys.data(), values.data(),
                                        &count, &opts);
    if (rc != 0 && errno != ENOENT) return false;
    for (uint32_t i = 0; i < count && i < kChunk; ++i) {
      if (set_of(keys[i]) == set) out.emplace_back(keys[i], values[i]);
    }
    if (rc != 0) return true;  // ENOENT: the map is read to its end
    std::memcpy(in_token, out_token, sizeof in_token);
    first = false;
  }
}

// Every key of `fd` whose set is `set`, by bpf_map_get_next_key (values not read).
template <typename Key, typename SetOf>
std::vector<std::pair<Key, rule_bitmap>> walk_set_keys(int fd, uint32_t set, SetOf set_of) {
  std::vector<std::pair<Key, rule_bitmap>> found;
  Key key{}, next{};
  const Key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (set_of(next) == set) found.emplace_back(next, rule_bitmap{});
    key = next;
    prev = &key;
  }
  return found;
}

// Orders of the keys, for sorting and merging; any total order will do. Function objects, so the
// sort and the merge inline them (4,100 trie keys at 256 rules: the order is most of a reload's CPU).
struct AddrKeyLess {
  bool operator()(const rule_addr_key& a, const rule_addr_key& b) const {
    static_assert(sizeof(rule_addr_key) == 3 * sizeof(uint64_t));
    uint64_t x[3], y[3];
    std::memcpy(x, &a, sizeof x);
    std::memcpy(y, &b, sizeof y);
    return x[0] != y[0] ? x[0] < y[0] : x[1] != y[1] ? x[1] < y[1] : x[2] < y[2];
  }
};
struct IfaceKeyLess {
  bool operator()(const rule_iface_key& a, const rule_iface_key& b) const {
    return a.set != b.set ? a.set < b.set : a.ifindex < b.ifindex;
  }
};
inline bool same_bitmap(const rule_bitmap& a, const rule_bitmap& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

inline rule_addr_key addr_key(uint32_t set, const policy::RuleTables::Prefix& p) {
  rule_addr_key key{};
  key.prefixlen = 32U + p.prefixlen;
  key.set = static_cast<uint8_t>(set);
  key.dir = p.dir;
  key.family = p.family;
  for (int i = 0; i < 16; ++i) key.addr[i] = p.addr[i];
  return key;
}

// A hash or trie's entries of one set, sorted by key: what a set must hold, or what it holds.
template <typename Key>
struct KeyedBitmaps {
  std::vector<Key> keys;
  std::vector<rule_bitmap> values;  // values[i] is keys[i]'s
};

template <typename Key, typename Less>
KeyedBitmaps<Key> sorted(std::vector<std::pair<Key, rule_bitmap>> entries, Less less) {
  std::sort(entries.begin(), entries.end(),
            [&](const auto& a, const auto& b) { return less(a.first, b.first); });
  KeyedBitmaps<Key> out;
  out.keys.reserve(entries.size());
  out.values.reserve(entries.size());
  for (const auto& [k, v] : entries) {
    out.keys.push_back(k);
    out.values.push_back(v);
  }
  return out;
}

inline KeyedBitmaps<rule_addr_key> wanted_prefixes(uint32_t set, const policy::RuleTables& t) {
  std::vector<std::pair<rule_addr_key, rule_bitmap>> entries;
  entries.reserve(t.prefixes.size());
  for (const auto& p : t.prefixes) entries.emplace_back(addr_key(set, p), p.rules);
  return sorted(std::move(entries), AddrKeyLess{});
}

inline KeyedBitmaps<rule_iface_key> wanted_ifaces(uint32_t set, const policy::RuleTables& t) {
  std::vector<std::pair<rule_iface_key, rule_bitmap>> entries;
  entries.reserve(t.ifaces.size());
  for (const auto& i : t.ifaces) entries.emplace_back(rule_iface_key{set, i.ifindex}, i.rules);
  return sorted(std::move(entries), IfaceKeyLess{});
}

// What turns `held` into `want`: the keys to delete, and the entries to write (new keys, and kept keys
// whose bitmap differs; every wanted key when the held values are unknown). Both lists sorted.
template <typename Key>
struct Difference {
  std::vector<Key> doomed;
  KeyedBitmaps<Key> writes;
};

template <typename Key, typename Less>
Difference<Key> difference(const KeyedBitmaps<Key>& held, bool values_known, const KeyedBitmaps<Key>& want,
                           Less less) {
  Difference<Key> d;
  d.writes.keys.reserve(want.keys.size());
  d.writes.values.reserve(want.keys.size());
  size_t h = 0, w = 0;
  auto write = [&](size_t i) {
    d.writes.keys.push_back(want.keys[i]);
    d.writes.values.push_back(want.values[i]);
  };
  while (h < held.keys.size() || w < want.keys.size()) {
    if (w == want.keys.size() || (h < held.keys.size() && less(held.keys[h], want.keys[w]))) {
      d.doomed.push_back(held.keys[h++]);
    } else if (h == held.keys.size() || less(want.keys[w], held.keys[h])) {
      write(w++);
    } else {
      if (!values_known || !same_bitmap(held.values[h], want.values[w])) write(w);
      ++h;
      ++w;
    }
  }
  return d;
}

inline double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace rule_table_detail

// The set packets are classified with now (0 when rule_tbl_sel cannot be read).
inline rule_tbl_select active_rule_tables(int sel_fd) {
  const uint32_t zero = 0;
  rule_tbl_select sel{};
  if (bpf_map_lookup_elem(sel_fd, &zero, &sel) != 0) return rule_tbl_select{};
  return sel;
}

// Makes `set` the one packets use: one update of rule_tbl_sel. 0 or -errno.
inline int flip_rule_tables(const RuleTableFds& fds, uint32_t set) {
  rule_tbl_select sel = active_rule_tables(fds.sel);
  sel.active = set & 1U;
  sel.generation++;
  const uint32_t zero = 0;
  return rule_table_detail::err_or_zero(bpf_map_update_elem(fds.sel, &zero, &sel, BPF_ANY));
}

// Writes tables into one set of maps (one RuleTableFds) and remembers, per table set, what it wrote
// there, so the next write into that set is the difference only. One writer per set of maps, used
// by one thread; a fresh writer (a daemon that just started or adopted the maps) knows nothing and
// walks each set once.
class RuleTableWriter {
 public:
  RuleTableWriter() = default;
  // `batch` false: one syscall per element and a key-by-key walk, as on a kernel without batch ops
  // for these map types (5.15's LPM trie); fixtures use it to run that path on any kernel.
  explicit RuleTableWriter(bool batch)
      : batch_reads_(batch), addr_batch_ok_(batch), ports_batch_ok_(batch), iface_batch_ok_(batch) {}

  // Makes the set packets do not use hold exactly `t`; packets keep using the active set. Returns
  // the set written (0 or 1), or -errno (that set's contents are unknown then; the active set is
  // untouched).
  int write_inactive(const RuleTableFds& fds, const policy::RuleTables& t) {
    const uint32_t next = (active_rule_tables(fds.sel).active & 1U) ^ 1U;
    stats_ = RuleWriteStats{};
    Held& held = held_[next];
    if (!held.known) learn_set(fds, next, held);
    held.known = false;  // until every step below has succeeded
    int rc = write_prefixes(fds.addr, next, t, held);
    if (rc == 0) rc = write_ports(fds.ports, next, t, held);
    if (rc == 0) rc = write_ifaces(fds.iface, next, t, held);
    if (rc == 0) rc = write_arrays(fds, next, t);
    if (rc != 0) {
      held = Held{};
      return rc;
    }
    held.known = held.values_known = true;
    return static_cast<int>(next);
  }

  // write_inactive, then the flip. Returns 0, or -errno with the active set unchanged (a failed
  // write never becomes live).
  int write(const RuleTableFds& fds, const policy::RuleTables& t) {
    const int set = write_inactive(fds, t);
    return set < 0 ? set : flip_rule_tables(fds, static_cast<uint32_t>(set));
  }

  // Forgets what the sets hold (something else wrote them): the next write into each walks.
  void forget() { held_ = {}; }

  [[nodiscard]] const RuleWriteStats& last_stats() const { return stats_; }

 private:
  struct Held {
    bool known = false;         // keys below are exactly the set's
    bool values_known = false;  // and so are their values (false after a key-by-key walk)
    rule_table_detail::KeyedBitmaps<rule_addr_key> prefixes;
    rule_table_detail::KeyedBitmaps<rule_iface_key> ifaces;
    std::array<std::vector<rule_bitmap>, 2> ports;  // slots [0, size) as written; empty: unknown
  };

  // The set's trie and hash entries, read from the maps (the first write into a set only): in
  // batches with their values where the kernel has batch lookup for both map types (6.1: yes; 5.15:
  // not for the trie), else the keys alone by a key-by-key walk, and every wanted key is rewritten.
  void learn_set(const RuleTableFds& fds, uint32_t set, Held& held) {
    using namespace rule_table_detail;
    const auto start = std::chrono::steady_clock::now();
    held = Held{};
    auto addr_set = [](const rule_addr_key& k) { return uint32_t{k.set}; };
    auto iface_set = [](const rule_iface_key& k) { return k.set; };
    std::vector<std::pair<rule_addr_key, rule_bitmap>> prefixes;
    std::vector<std::pair<rule_iface_key, rule_bitmap>> ifaces;
    held.values_known = batch_reads_ && read_set_entries<rule_addr_key>(fds.addr, set, addr_set, prefixes) &&
                        read_set_entries<rule_iface_key>(fds.iface, set, iface_set, ifaces);
    if (!held.values_known) {
      prefixes = walk_set_keys<rule_addr_key>(fds.addr, set, addr_set);
      ifaces = walk_set_keys<rule_iface_key>(fds.iface, set, iface_set);
    }
    held.prefixes = sorted(std::move(prefixes), AddrKeyLess{});
    held.ifaces = sorted(std::move(ifaces), IfaceKeyLess{});
    stats_.walked = true;
    stats_.walk_ms = ms_since(start);
  }

  // Deletes before writing, so the trie never holds more than one set's worth plus the other set:
  // its max_entries is sized for two sets.
  int write_prefixes(int fd, uint32_t set, const policy::RuleTables& t, Held& held) {
    using namespace rule_table_detail;
    auto start = std::chrono::steady_clock::now();
    KeyedBitmaps<rule_addr_key> want = wanted_prefixes(set, t);
    const Difference<rule_addr_key> d = difference(held.prefixes, held.values_known, want, AddrKeyLess{});
    stats_.addr_plan_ms = ms_since(start);
    start = std::chrono::steady_clock::now();
    int rc = delete_all(fd, d.doomed, addr_batch_ok_);
    stats_.addr_deleted = static_cast<uint32_t>(d.doomed.size());
    stats_.addr_delete_ms = ms_since(start);
    start = std::chrono::steady_clock::now();
    if (rc == 0) rc = update_all(fd, d.writes.keys, d.writes.values, addr_batch_ok_);
    if (rc == -ENOSPC) {
      // Kernels before 6.13 refuse to replace a key in a full trie (both sets at their largest).
      // Packets do not read this set, so its keys can go first and be added back.
      rc = delete_all(fd, d.writes.keys, addr_batch_ok_);
      if (rc == 0) rc = update_all(fd, d.writes.keys, d.writes.values, addr_batch_ok_);
    }
    stats_.addr_written = static_cast<uint32_t>(d.writes.keys.size());
    stats_.addr_write_ms = ms_since(start);
    held.prefixes = std::move(want);
    return rc;
  }

  // Slot k of a direction is read only for k < rule_tbl.n_port_starts, so slots past the new count
  // are left as they are; a slot is written when it is new or its bitmap changed.
  int write_ports(int fd, uint32_t set, const policy::RuleTables& t, Held& held) {
    using namespace rule_table_detail;
    const auto start = std::chrono::steady_clock::now();
    std::vector<uint32_t> slots;
    std::vector<rule_bitmap> values;
    for (uint32_t dir = 0; dir < 2; ++dir) {
      const std::vector<rule_bitmap>& was = held.ports[dir];
      const std::vector<rule_bitmap>& want = t.ports[dir];
      for (uint32_t k = 0; k < want.size(); ++k) {
        if (held.values_known && k < was.size() && same_bitmap(was[k], want[k])) continue;
        slots.push_back(UPLINKD_RULE_PORT_SLOT(set, dir, k));
        values.push_back(want[k]);
      }
    }
    const int rc = update_all(fd, slots, values, ports_batch_ok_);
    stats_.ports_written = static_cast<uint32_t>(slots.size());
    stats_.ports_ms = ms_since(start);
    held.ports = t.ports;
    return rc;
  }

  int write_ifaces(int fd, uint32_t set, const policy::RuleTables& t, Held& held) {
    using namespace rule_table_detail;
    const auto start = std::chrono::steady_clock::now();
    KeyedBitmaps<rule_iface_key> want = wanted_ifaces(set, t);
    const Difference<rule_iface_key> d = difference(held.ifaces, held.values_known, want, IfaceKeyLess{});
    int rc = delete_all(fd, d.doomed, iface_batch_ok_);
    if (rc == 0) rc = update_all(fd, d.writes.keys, d.writes.values, iface_batch_ok_);
    stats_.iface_deleted = static_cast<uint32_t>(d.doomed.size());
    stats_.iface_written = static_cast<uint32_t>(d.writes.keys.size());
    stats_.iface_ms = ms_since(start);
    held.ifaces = std::move(want);
    return rc;
  }

  // rule_tbl and rule_tbl_ext: one value per set each, always written (two syscalls, ~20 µs).
  int write_arrays(const RuleTableFds& fds, uint32_t set, const policy::RuleTables& t) {
    using namespace rule_table_detail;
    const auto start = std::chrono::steady_clock::now();
    int rc = 0;
    if (fds.ext >= 0) rc = err_or_zero(bpf_map_update_elem(fds.ext, &set, &t.ext, BPF_ANY));
    if (rc == 0) rc = err_or_zero(bpf_map_update_elem(fds.tbl, &set, t.arrays.get(), BPF_ANY));
    stats_.arrays_ms = ms_since(start);
    return rc;
  }

  std::array<Held, UPLINKD_RULE_TABLE_SETS> held_{};
  bool batch_reads_ = true, addr_batch_ok_ = true, ports_batch_ok_ = true, iface_batch_ok_ = true;
  RuleWriteStats stats_{};
};

// Stateless forms, for callers that write once (fixtures): a fresh writer each call, so each walks.
inline int write_inactive_rule_tables(const RuleTableFds& fds, const policy::RuleTables& t) {
  RuleTableWriter writer;
  return writer.write_inactive(fds, t);
}

inline int write_rule_tables(const RuleTableFds& fds, const policy::RuleTables& t) {
  RuleTableWriter writer;
  return writer.write(fds, t);
}

}  // namespace uplinkd::datapath
