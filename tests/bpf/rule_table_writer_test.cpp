// RuleTableWriter (datapath/rule_table_maps.h) writes only the difference between what the inactive
// table set holds and what it must hold. These fixtures prove that a set it flips to holds exactly
// what a fresh write of the same rules holds (every trie and hash entry of the set, the port slots
// the classifier reads, rule_tbl and rule_tbl_ext), over sequences of reloads that return to earlier
// rule sets, over a writer that starts on sets another writer filled (a daemon that adopted the
// maps), and with both sets at the trie's full size. Packets through the classifier are covered by
// lan_ingress_bitvec_test.cpp, whose Classifier writes through a writer too.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "rule_tables_helper.h"

namespace uplinkd::bpftest {
namespace {

using datapath::RuleTableFds;
using datapath::RuleTableWriter;

// ---- rule sets ------------------------------------------------------------------------------

// Random rules over small pools, so prefixes nest and are shared between rules and rule sets, port
// ranges share boundaries, and interfaces repeat: reloads keep some keys, change some bitmaps, drop
// and add others.
std::vector<rule_entry> random_rules(uint32_t seed, uint32_t count) {
  std::mt19937 rng(seed);
  auto pick = [&](uint32_t lo, uint32_t hi) { return std::uniform_int_distribution<uint32_t>(lo, hi)(rng); };
  std::vector<rule_entry> rules(count);
  for (rule_entry& r : rules) {
    r.family = static_cast<uint8_t>(pick(0, 2) == 0 ? 6 : 4);
    r.proto = pick(0, 1) == 0 ? IPPROTO_TCP : IPPROTO_UDP;
    r.src_ifindex = pick(0, 2) == 0 ? pick(11, 14) : 0;
    r.policy_id = pick(0, 3);
    auto fill_addrs = [&](addr_match* list, uint8_t& n) {
      n = static_cast<uint8_t>(pick(0, 3));
      for (unsigned k = 0; k < n; ++k) {
        addr_match& m = list[k];
        m.family = r.family;
        if (r.family == 4) {
          m.addr[0] = 10;
          m.addr[1] = static_cast<uint8_t>(pick(0, 3));
          m.addr[2] = static_cast<uint8_t>(pick(0, 3) * 64);
          m.prefixlen = static_cast<uint8_t>(std::array<int, 4>{8, 16, 18, 24}[pick(0, 3)]);
        } else {
          const uint8_t v6[] = {0x20, 0x01, 0x0d, 0xb8};
          std::memcpy(m.addr, v6, 4);
          m.addr[4] = static_cast<uint8_t>(pick(0, 3));
          m.prefixlen = static_cast<uint8_t>(std::array<int, 4>{32, 40, 48, 64}[pick(0, 3)]);
        }
        for (unsigned bit = m.prefixlen; bit < 128; ++bit)
          m.addr[bit / 8] &= static_cast<uint8_t>(~(0x80U >> (bit % 8)));
      }
    };
    fill_addrs(r.src, r.n_src);
    fill_addrs(r.dst, r.n_dst);
    auto fill_ports = [&](port_range* list, uint8_t& n) {
      n = static_cast<uint8_t>(pick(0, 2));
      for (unsigned k = 0; k < n; ++k) {
        const auto lo = static_cast<uint16_t>(pick(0, 20) * 50);
        list[k] = port_range{lo, static_cast<uint16_t>(lo + pick(0, 2) * 25)};
      }
    };
    fill_ports(r.sport, r.n_sport);
    fill_ports(r.dport, r.n_dport);
  }
  return rules;
}

// The worst case of rule_reload_bench: each rule with 8 + 8 IPv4 /24s of its own (variant v moves
// them), so 256 of them fill one set's share of the address trie.
std::vector<rule_entry> own_prefix_rules(uint32_t count, uint32_t variant) {
  std::vector<rule_entry> rules(count);
  for (uint32_t i = 0; i < count; ++i) {
    rule_entry& r = rules[i];
    r.family = 4;
    r.proto = IPPROTO_TCP;
    r.n_src = r.n_dst = 8;
    for (unsigned k = 0; k < 8; ++k) {
      for (addr_match* m : {&r.src[k], &r.dst[k]}) {
        m->family = 4;
        m->prefixlen = 24;
        m->addr[0] = 10;
        m->addr[1] = static_cast<uint8_t>((m == &r.dst[k] ? 128 : 0) + i / 4);
        m->addr[2] = static_cast<uint8_t>((i % 4) * 64 + 8 * variant + k);
      }
    }
  }
  return rules;
}

// ---- what a table set holds -----------------------------------------------------------------

struct SetContents {
  std::vector<std::pair<rule_addr_key, rule_bitmap>> prefixes;  // keys with set 0, sorted
  std::vector<std::pair<uint32_t, rule_bitmap>> ifaces;         // by ifindex
  std::array<std::vector<rule_bitmap>, 2> ports;                // the slots the classifier reads
  std::unique_ptr<rule_tbl> tbl = std::make_unique<rule_tbl>();
  rule_tbl_ext ext{};
};

bool same_bytes(const void* a, const void* b, size_t n) { return std::memcmp(a, b, n) == 0; }

SetContents contents_of(const RuleTableFds& fds, uint32_t set) {
  SetContents c;
  rule_addr_key key{}, next{};
  const rule_addr_key* prev = nullptr;
  while (bpf_map_get_next_key(fds.addr, prev, &next) == 0) {
    key = next;
    prev = &key;
    if (next.set != set) continue;
    rule_bitmap value{};
    EXPECT_EQ(bpf_map_lookup_elem(fds.addr, &next, &value), 0);
    rule_addr_key normalized = next;
    normalized.set = 0;
    c.prefixes.emplace_back(normalized, value);
  }
  std::sort(c.prefixes.begin(), c.prefixes.end(),
            [](const auto& a, const auto& b) { return std::memcmp(&a.first, &b.first, sizeof a.first) < 0; });
  rule_iface_key ikey{}, inext{};
  const rule_iface_key* iprev = nullptr;
  while (bpf_map_get_next_key(fds.iface, iprev, &inext) == 0) {
    ikey = inext;
    iprev = &ikey;
    if (inext.set != set) continue;
    rule_bitmap value{};
    EXPECT_EQ(bpf_map_lookup_elem(fds.iface, &inext, &value), 0);
    c.ifaces.emplace_back(inext.ifindex, value);
  }
  std::sort(c.ifaces.begin(), c.ifaces.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  EXPECT_EQ(bpf_map_lookup_elem(fds.tbl, &set, c.tbl.get()), 0);
  EXPECT_EQ(bpf_map_lookup_elem(fds.ext, &set, &c.ext), 0);
  for (uint32_t dir = 0; dir < 2; ++dir) {
    for (uint32_t k = 0; k < c.tbl->n_port_starts[dir]; ++k) {
      const uint32_t slot = UPLINKD_RULE_PORT_SLOT(set, dir, k);
      rule_bitmap value{};
      EXPECT_EQ(bpf_map_lookup_elem(fds.ports, &slot, &value), 0);
      c.ports[dir].push_back(value);
    }
  }
  return c;
}

// Differences between two sets' contents, in words (empty when they hold the same tables).
std::string differences(const SetContents& got, const SetContents& want) {
  std::string out;
  auto same_pairs = [](const auto& a, const auto& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!same_bytes(&a[i].first, &b[i].first, sizeof a[i].first) ||
          !same_bytes(&a[i].second, &b[i].second, sizeof a[i].second))
        return false;
    }
    return true;
  };
  if (!same_pairs(got.prefixes, want.prefixes))
    out += "address trie: " + std::to_string(got.prefixes.size()) + " entries vs " +
           std::to_string(want.prefixes.size()) + " or values differ; ";
  if (!same_pairs(got.ifaces, want.ifaces)) out += "interface hash differs; ";
  for (int dir = 0; dir < 2; ++dir) {
    const auto& g = got.ports[dir];
    const auto& w = want.ports[dir];
    if (g.size() != w.size() || (!g.empty() && !same_bytes(g.data(), w.data(), g.size() * sizeof g[0])))
      out += "port slots of direction " + std::to_string(dir) + " differ; ";
  }
  if (!same_bytes(got.tbl.get(), want.tbl.get(), sizeof(rule_tbl))) out += "rule_tbl differs; ";
  if (!same_bytes(&got.ext, &want.ext, sizeof want.ext)) out += "rule_tbl_ext differs; ";
  return out;
}

// ---- fixture --------------------------------------------------------------------------------

class Maps {
 public:
  Maps() : skel_(lan_ingress__open_and_load()) {}
  ~Maps() {
    if (skel_ != nullptr) lan_ingress__destroy(skel_);
  }
  Maps(const Maps&) = delete;
  Maps& operator=(const Maps&) = delete;
  bool ok() const { return skel_ != nullptr; }
  RuleTableFds fds() const { return testing::rule_table_fds(skel_); }
  uint32_t active() const { return datapath::active_rule_tables(fds().sel).active; }
  SetContents active_contents() const { return contents_of(fds(), active()); }

 private:
  lan_ingress* skel_;
};

// What a writer that never saw these maps writes for `rules`, on maps of their own.
SetContents fresh_write(const std::vector<rule_entry>& rules) {
  Maps fresh;
  EXPECT_TRUE(fresh.ok());
  EXPECT_EQ(datapath::write_rule_tables(fresh.fds(), policy::compile_rule_tables(rules)), 0);
  return fresh.active_contents();
}

// Writes `rules` with `writer` and checks the set flipped to against a fresh write.
void write_and_compare(Maps& maps, RuleTableWriter& writer, const std::vector<rule_entry>& rules,
                       const std::string& step) {
  const uint32_t before = maps.active();
  ASSERT_EQ(writer.write(maps.fds(), policy::compile_rule_tables(rules)), 0) << step;
  ASSERT_NE(maps.active(), before) << step << ": the flip";
  EXPECT_EQ(differences(maps.active_contents(), fresh_write(rules)), "") << step;
}

#define ASSERT_MAPS(m) ASSERT_TRUE((m).ok()) << "lan_ingress must load: " << std::strerror(errno)

void reloads_back_and_forth(RuleTableWriter& writer) {
  Maps maps;
  ASSERT_MAPS(maps);
  const std::vector<rule_entry> a = random_rules(1, 40), b = random_rules(2, 60), c = random_rules(3, 25);
  const std::vector<std::pair<const char*, const std::vector<rule_entry>*>> steps = {
      {"A", &a}, {"B", &b}, {"A again", &a}, {"C", &c}, {"B again", &b}, {"C again", &c}, {"A third", &a}};
  for (const auto& [step, rules] : steps) {
    write_and_compare(maps, writer, *rules, step);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(RuleTableWriter, ReloadsBackAndForthHoldWhatAFreshWriteHolds) {
  RuleTableWriter writer;
  reloads_back_and_forth(writer);
}

// The same without batch syscalls: what a kernel without them for the trie (5.15) runs.
TEST(RuleTableWriter, ReloadsOneElementAtATimeHoldWhatAFreshWriteHolds) {
  RuleTableWriter writer(false);
  reloads_back_and_forth(writer);
  Maps maps;
  ASSERT_MAPS(maps);
  RuleTableWriter predecessor(false), adopter(false);
  write_and_compare(maps, predecessor, random_rules(9, 30), "predecessor");
  write_and_compare(maps, predecessor, random_rules(10, 30), "predecessor again");
  write_and_compare(maps, adopter, random_rules(9, 30), "adopter, by a key-by-key walk");
  EXPECT_TRUE(adopter.last_stats().walked);
}

TEST(RuleTableWriter, WritesOnlyWhatDiffers) {
  Maps maps;
  ASSERT_MAPS(maps);
  RuleTableWriter writer;
  const std::vector<rule_entry> a = random_rules(4, 50);
  std::vector<rule_entry> a2 = a;
  a2[17] = random_rules(5, 1)[0];  // one rule changed
  write_and_compare(maps, writer, a, "A into set 1");
  write_and_compare(maps, writer, a, "A into set 0");
  write_and_compare(maps, writer, a, "A into set 1, which holds A");
  const datapath::RuleWriteStats same = writer.last_stats();
  EXPECT_FALSE(same.walked);
  EXPECT_EQ(
      same.addr_deleted + same.addr_written + same.ports_written + same.iface_deleted + same.iface_written,
      0U);
  write_and_compare(maps, writer, a2, "A with one rule changed");
  const datapath::RuleWriteStats one = writer.last_stats();
  const size_t prefixes = policy::compile_rule_tables(a2).prefixes.size();
  EXPECT_LT(one.addr_deleted + one.addr_written, prefixes) << "a changed rule rewrites part of the trie only";
}

// A daemon that adopted the maps knows nothing of what its predecessor wrote: its first write into
// each set walks, and its later writes are differences again.
TEST(RuleTableWriter, AdoptingWriterWalksOnceThenDiffers) {
  Maps maps;
  ASSERT_MAPS(maps);
  const std::vector<rule_entry> a = random_rules(6, 40), b = random_rules(7, 40), c = random_rules(8, 40);
  {
    RuleTableWriter predecessor;
    write_and_compare(maps, predecessor, a, "predecessor A");
    write_and_compare(maps, predecessor, b, "predecessor B");
  }
  RuleTableWriter adopter;
  write_and_compare(maps, adopter, c, "adopter C");
  EXPECT_TRUE(adopter.last_stats().walked);
  write_and_compare(maps, adopter, a, "adopter A");
  EXPECT_TRUE(adopter.last_stats().walked) << "the other set is still unknown to it";
  write_and_compare(maps, adopter, b, "adopter B");
  EXPECT_FALSE(adopter.last_stats().walked);
  write_and_compare(maps, adopter, c, "adopter C again");
  EXPECT_FALSE(adopter.last_stats().walked);
}

// Both sets at their largest fill the address trie; rewriting a set then replaces keys in a full
// trie, which kernels before 6.13 refuse (ENOSPC) and the writer works around.
TEST(RuleTableWriter, FullTriesRewriteToWhatAFreshWriteHolds) {
  Maps maps;
  ASSERT_MAPS(maps);
  RuleTableWriter writer;
  const std::vector<rule_entry> v0 = own_prefix_rules(UPLINKD_MAX_RULES, 0);
  const std::vector<rule_entry> v1 = own_prefix_rules(UPLINKD_MAX_RULES, 1);
  std::vector<rule_entry> v0_reversed(v0.rbegin(), v0.rend());  // the same keys, other bitmaps
  write_and_compare(maps, writer, v0, "v0");
  write_and_compare(maps, writer, v1, "v1");
  write_and_compare(maps, writer, v0_reversed, "v0 reversed over v0");
  write_and_compare(maps, writer, v0, "v0 over v1");
}

}  // namespace
}  // namespace uplinkd::bpftest
