// The bit-vector classifier's table compiler (loader/policy/rule_tables.h): the shapes the datapath
// relies on (prefix closure, elementary port intervals, the ipset bitmaps). Whether the tables classify
// as mwan3 does is tested on the real program (tests/bpf/lan_ingress_bitvec_test.cpp).
#include "policy/rule_tables.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>
#include <stdexcept>
#include <vector>

namespace uplinkd::policy {
namespace {

addr_match v4(const char* a, uint8_t len) {
  addr_match m{};
  inet_pton(AF_INET, a, m.addr);
  m.prefixlen = len;
  m.family = 4;
  return m;
}

rule_bitmap bits(std::initializer_list<uint32_t> rules) {
  rule_bitmap b{};
  for (uint32_t r : rules) bitmap_set(b, r);
  return b;
}

bool same(const rule_bitmap& a, const rule_bitmap& b) { return std::memcmp(&a, &b, sizeof a) == 0; }

const RuleTables::Prefix* find(const RuleTables& t, int dir, int family, const char* a, uint8_t len) {
  const addr_match want = v4(a, len);
  for (const auto& p : t.prefixes) {
    if (p.dir == dir && p.family == family && p.prefixlen == len &&
        std::memcmp(p.addr.data(), want.addr, 16) == 0)
      return &p;
  }
  return nullptr;
}

TEST(RuleTables, PrefixClosureCarriesShorterPrefixesAndEmptyLists) {
  std::vector<rule_entry> rules(3);
  rules[0].n_dst = 1;
  rules[0].dst[0] = v4("10.0.0.0", 8);
  rules[1].n_dst = 1;
  rules[1].dst[0] = v4("10.1.2.0", 24);
  // rules[2]: no destination list, accepts every destination
  const RuleTables t = compile_rule_tables(rules);
  const auto* slash24 = find(t, UPLINKD_RULE_DIR_DST, 4, "10.1.2.0", 24);
  const auto* slash8 = find(t, UPLINKD_RULE_DIR_DST, 4, "10.0.0.0", 8);
  const auto* root = find(t, UPLINKD_RULE_DIR_DST, 4, "0.0.0.0", 0);
  ASSERT_NE(slash24, nullptr);
  ASSERT_NE(slash8, nullptr);
  ASSERT_NE(root, nullptr);
  EXPECT_TRUE(same(slash24->rules, bits({0, 1, 2})));
  EXPECT_TRUE(same(slash8->rules, bits({0, 2})));
  EXPECT_TRUE(same(root->rules, bits({2})));
  // IPv6 has only its root: rules 0 and 1 hold IPv4 entries only, so no IPv6 destination matches them.
  size_t v6 = 0;
  for (const auto& p : t.prefixes) v6 += p.dir == UPLINKD_RULE_DIR_DST && p.family == 6 ? 1 : 0;
  EXPECT_EQ(v6, 1U);
}

TEST(RuleTables, PortsBecomeElementaryIntervals) {
  std::vector<rule_entry> rules(2);
  rules[0].n_dport = 2;
  rules[0].dport[0] = port_range{100, 200};
  rules[0].dport[1] = port_range{150, 65535};
  // rules[1]: no port list
  const RuleTables t = compile_rule_tables(rules);
  const std::vector<uint32_t> want_starts = {0, 100, 150, 201};
  ASSERT_EQ(t.arrays->n_port_starts[UPLINKD_RULE_DIR_DST], want_starts.size());
  for (size_t k = 0; k < want_starts.size(); ++k)
    EXPECT_EQ(t.arrays->port_start[UPLINKD_RULE_DIR_DST][k], want_starts[k]);
  EXPECT_EQ(t.arrays->port_start[UPLINKD_RULE_DIR_DST][want_starts.size()], UPLINKD_PORT_PAST);
  EXPECT_EQ(t.arrays->port_start[UPLINKD_RULE_DIR_DST][UPLINKD_PORT_SEARCH_SLOTS - 1], UPLINKD_PORT_PAST);
  ASSERT_EQ(t.ports[UPLINKD_RULE_DIR_DST].size(), 4U);
  EXPECT_TRUE(same(t.ports[UPLINKD_RULE_DIR_DST][0], bits({1})));
  EXPECT_TRUE(same(t.ports[UPLINKD_RULE_DIR_DST][1], bits({0, 1})));
  EXPECT_TRUE(same(t.ports[UPLINKD_RULE_DIR_DST][3], bits({0, 1})));
  EXPECT_TRUE(same(t.arrays->no_ports, bits({1})));
  ASSERT_EQ(t.ports[UPLINKD_RULE_DIR_SRC].size(), 1U);  // no source lists: one interval, every rule
  EXPECT_TRUE(same(t.ports[UPLINKD_RULE_DIR_SRC][0], bits({0, 1})));
}

TEST(RuleTables, FamilyProtocolInterfaceAndSets) {
  std::vector<rule_entry> rules(4);
  rules[0].family = 6;
  rules[0].proto = IPPROTO_UDP;
  rules[1].src_ifindex = 7;
  rules[2].set_id = 2;
  rules[3].set_id = UPLINKD_MAX_SETS + 1;  // no such slot: matches nothing
  const RuleTables t = compile_rule_tables(rules);
  EXPECT_TRUE(same(t.arrays->family[0], bits({1, 2})));
  EXPECT_TRUE(same(t.arrays->family[1], bits({0, 1, 2})));
  EXPECT_TRUE(same(t.arrays->proto[IPPROTO_TCP], bits({1, 2})));
  EXPECT_TRUE(same(t.arrays->proto[IPPROTO_UDP], bits({0, 1, 2})));
  EXPECT_TRUE(same(t.arrays->any_iface, bits({0, 2, 3})));
  ASSERT_EQ(t.ifaces.size(), 1U);
  EXPECT_EQ(t.ifaces[0].ifindex, 7U);
  EXPECT_TRUE(same(t.ifaces[0].rules, bits({0, 1, 2, 3})));
  EXPECT_TRUE(same(t.arrays->set_rules, bits({2})));
  EXPECT_TRUE(same(t.arrays->by_set[1], bits({2})));
  EXPECT_EQ(t.arrays->rule_set[2], 2);
}

// rule_tbl_ext: what the classifier may skip a field's lookup for. A /0 of one family accepts every
// address of that family only; a port list of one direction constrains that direction only.
TEST(RuleTables, RulesAcceptingAnyValueOfAField) {
  std::vector<rule_entry> rules(4);
  rules[0].n_src = 1;
  rules[0].src[0] = v4("10.0.0.0", 8);
  rules[1].n_src = 1;
  rules[1].src[0] = v4("0.0.0.0", 0);
  rules[2].n_dport = 1;
  rules[2].dport[0] = port_range{443, 443};
  // rules[3]: no lists at all
  const RuleTables t = compile_rule_tables(rules);
  EXPECT_TRUE(same(t.ext.any_addr[UPLINKD_RULE_DIR_SRC][0], bits({1, 2, 3})));
  EXPECT_TRUE(same(t.ext.any_addr[UPLINKD_RULE_DIR_SRC][1], bits({2, 3})));
  EXPECT_TRUE(same(t.ext.any_addr[UPLINKD_RULE_DIR_DST][0], bits({0, 1, 2, 3})));
  EXPECT_TRUE(same(t.ext.any_addr[UPLINKD_RULE_DIR_DST][1], bits({0, 1, 2, 3})));
  EXPECT_TRUE(same(t.ext.any_port[UPLINKD_RULE_DIR_SRC], bits({0, 1, 2, 3})));
  EXPECT_TRUE(same(t.ext.any_port[UPLINKD_RULE_DIR_DST], bits({0, 1, 3})));
}

// The 64-slot copy of a direction's port boundaries: the same boundaries, padded, while they fit.
TEST(RuleTables, SmallPortSearchTableWhileTheBoundariesFit) {
  std::vector<rule_entry> rules(40);
  for (uint16_t i = 0; i < rules.size(); ++i) {
    rules[i].n_dport = 1;
    rules[i].dport[0] = port_range{static_cast<uint16_t>(100 + 10 * i), static_cast<uint16_t>(100 + 10 * i)};
    rules[i].n_sport = i < 20 ? 1 : 0;  // 1 + 2 x 20 = 41 source boundaries
    rules[i].sport[0] = rules[i].dport[0];
  }
  const RuleTables t = compile_rule_tables(rules);
  ASSERT_EQ(t.arrays->n_port_starts[UPLINKD_RULE_DIR_SRC], 41U);
  ASSERT_EQ(t.arrays->n_port_starts[UPLINKD_RULE_DIR_DST], 81U);
  EXPECT_EQ(t.ext.small_ports[UPLINKD_RULE_DIR_SRC], 1U);
  EXPECT_EQ(t.ext.small_ports[UPLINKD_RULE_DIR_DST], 0U);  // 81 boundaries: the full search
  for (uint32_t k = 0; k < UPLINKD_PORT_SMALL_SLOTS; ++k)
    EXPECT_EQ(t.ext.port_start_small[UPLINKD_RULE_DIR_SRC][k], t.arrays->port_start[UPLINKD_RULE_DIR_SRC][k]);
  EXPECT_EQ(t.ext.port_start_small[UPLINKD_RULE_DIR_SRC][UPLINKD_PORT_SMALL_SLOTS - 1], UPLINKD_PORT_PAST);
}

TEST(RuleTables, RefusesMoreRulesThanTheClassifierHolds) {
  EXPECT_NO_THROW(compile_rule_tables(std::vector<rule_entry>(UPLINKD_MAX_RULES)));
  EXPECT_THROW(compile_rule_tables(std::vector<rule_entry>(UPLINKD_MAX_RULES + 1)), std::invalid_argument);
}

// The datapath's bounds follow from these: one boundary per range end plus port 0, and the
// branch-free search's 2^13 slots cover them.
static_assert(UPLINKD_PORT_INTERVALS == 2 * UPLINKD_MAX_RULES * UPLINKD_RULE_MAX_PORTS + 1);
static_assert(UPLINKD_PORT_SEARCH_SLOTS > UPLINKD_PORT_INTERVALS);
static_assert(UPLINKD_RULE_WORDS * 64 == UPLINKD_MAX_RULES);

}  // namespace
}  // namespace uplinkd::policy
