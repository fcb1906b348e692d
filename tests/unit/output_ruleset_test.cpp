// The router's own traffic: mwan3 rules compiled to the nft commands of uplinkd's output table
// (loader/local_out/output_ruleset.h). Text only here; tests/netns/output_table_test.cpp loads it.
#include "local_out/output_ruleset.h"

#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace uplinkd::local_out {
namespace {

// wan (id 1, mark 0x100), wanb (id 2, 0x200), wan6 (id 3, IPv6, 0x300); policy ids: balanced 3,
// wan_only 4.
const std::string kConfig =
    "config interface 'wan'\n"
    "\toption enabled '1'\n"
    "\toption device 'eth1'\n"
    "config interface 'wanb'\n"
    "\toption enabled '1'\n"
    "\toption device 'eth2'\n"
    "config interface 'wan6'\n"
    "\toption enabled '1'\n"
    "\toption family 'ipv6'\n"
    "\toption device 'eth1'\n"
    "config member 'wan_m1'\n"
    "\toption interface 'wan'\n"
    "\toption weight '3'\n"
    "config member 'wanb_m1'\n"
    "\toption interface 'wanb'\n"
    "\toption weight '2'\n"
    "config member 'wan6_m1'\n"
    "\toption interface 'wan6'\n"
    "config policy 'balanced'\n"
    "\tlist use_member 'wan_m1'\n"
    "\tlist use_member 'wanb_m1'\n"
    "\tlist use_member 'wan6_m1'\n"
    "config policy 'wan_only'\n"
    "\tlist use_member 'wan_m1'\n"
    "\toption last_resort 'blackhole'\n"
    "config rule 'dns'\n"
    "\toption proto 'udp'\n"
    "\toption dest_ip '203.0.113.3'\n"
    "\toption dest_port '53'\n"
    "\toption use_policy 'wan_only'\n"
    "config rule 'web'\n"
    "\toption proto 'tcp'\n"
    "\toption dest_port '443,8000-8080'\n"
    "\toption sticky '1'\n"
    "\toption timeout '30'\n"
    "\toption use_policy 'balanced'\n"
    "config rule 'guests'\n"
    "\toption src_iface 'guest'\n"
    "\toption use_policy 'wan_only'\n"
    "config rule 'vpn'\n"
    "\toption ipset 'vpn_hosts'\n"
    "\toption use_policy 'wan_only'\n"
    "config rule 'local'\n"
    "\toption dest_ip '10.0.0.0/8'\n"
    "\toption use_policy 'default'\n"
    "config rule 'default_rule_v4'\n"
    "\toption dest_ip '0.0.0.0/0'\n"
    "\toption family 'ipv4'\n"
    "\toption use_policy 'balanced'\n";

struct Fixture {
  config::Config cfg;
  std::map<std::string, uint32_t> ids;
  policy::CompiledRules rules;
  OutputPlan plan;
};

Fixture make() {
  Fixture f;
  f.cfg = config::parse(kConfig, "mwan3");
  f.ids = policy::assign_policy_ids(f.cfg);
  f.rules = policy::compile_rules(f.cfg, f.ids, {});
  f.plan.table = "uplinkd-out";
  f.plan.marks = policy::MarkSpace::from_mask(f.cfg.globals.mmx_mask);
  f.plan.uplinks = output_uplinks(f.cfg);
  for (const auto& [name, id] : f.ids) f.plan.policy_ids.push_back(id);
  f.plan.rules = &f.rules;
  return f;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The index of the first line containing `needle`, or -1.
int find_line(const std::vector<std::string>& lines, const std::string& needle) {
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find(needle) != std::string::npos) return static_cast<int>(i);
  }
  return -1;
}

TEST(OutputRuleset, TableNameKeepsApartFromTheCtMarkTable) {
  EXPECT_EQ(output_table_name(""), "uplinkd-out");
  EXPECT_EQ(output_table_name("default"), "uplinkd-out");
  EXPECT_EQ(output_table_name("lab 1"), "uplinkd-out_lab_1");
}

TEST(OutputRuleset, RuleMatchesPerFamily) {
  Fixture f = make();
  const auto& e = f.rules.entries;
  const auto& info = f.rules.info;
  EXPECT_EQ(rule_match(e[0], info[0], 4),
            "meta nfproto ipv4 meta l4proto 17 ip daddr { 203.0.113.3/32 } th dport { 53 }");
  EXPECT_EQ(rule_match(e[0], info[0], 6), "") << "an IPv4 address only: no IPv6 rule";
  EXPECT_EQ(rule_match(e[1], info[1], 6), "meta nfproto ipv6 meta l4proto 6 th dport { 443, 8000-8080 }");
  EXPECT_EQ(rule_match(e[2], info[2], 4), "") << "src_iface never matches the router's own packets";
  EXPECT_EQ(rule_match(e[3], info[3], 4), "meta nfproto ipv4 ip daddr @ipset1_v4");
  EXPECT_EQ(rule_match(e[5], info[5], 4), "meta nfproto ipv4 ip daddr { 0.0.0.0/0 }");
  EXPECT_EQ(rule_match(e[5], info[5], 6), "");
}

TEST(OutputRuleset, OutputChainKeepsMwan3Order) {
  Fixture f = make();
  const auto lines = lines_of(table_commands(f.plan));
  ASSERT_EQ(lines.at(0), "add table inet uplinkd-out");
  ASSERT_EQ(lines.at(1), "delete table inet uplinkd-out");
  const int hook =
      find_line(lines, "add chain inet uplinkd-out output { type route hook output priority mangle;");
  const int own_mark = find_line(lines, "output meta mark & 0x00003f00 != 0 return");
  const int restore = find_line(lines,
                                "output ct mark & 0x00003f00 == 0x00000100 meta mark set meta mark & "
                                "0xffffc0ff | 0x00000100 accept");
  const int connected = find_line(lines,
                                  "output ip daddr @connected_v4 meta mark set meta mark & 0xffffc0ff | "
                                  "0x00003f00 accept");
  const int dns = find_line(lines,
                            "output meta nfproto ipv4 meta l4proto 17 ip daddr { 203.0.113.3/32 } th dport "
                            "{ 53 } goto rule0_v4");
  const int web = find_line(lines, "goto rule1_v4");
  const int catch_all = find_line(lines, "output meta nfproto ipv4 ip daddr { 0.0.0.0/0 } goto rule5_v4");
  for (int at : {hook, own_mark, restore, connected, dns, web, catch_all}) ASSERT_GE(at, 0);
  EXPECT_LT(hook, own_mark);
  EXPECT_LT(own_mark, restore);
  EXPECT_LT(restore, connected);
  EXPECT_LT(connected, dns);
  EXPECT_LT(dns, web);
  EXPECT_LT(web, catch_all);
  EXPECT_EQ(find_line(lines, "rule2_"), -1) << "the src_iface rule has no chain";
  // Chains a verdict map jumps to come before the maps (nft refuses the other order).
  EXPECT_LT(find_line(lines, "add chain inet uplinkd-out mark_00000100"), find_line(lines, "add map"));
}

TEST(OutputRuleset, RuleChainsDecideByPolicyMapOrFixedMark) {
  Fixture f = make();
  const std::string text = table_commands(f.plan);
  EXPECT_NE(
      text.find("add rule inet uplinkd-out rule0_v4 meta mark & 0x00003f00 == 0 numgen random mod 4294967295 "
                "vmap @policy4_v4\n"),
      std::string::npos);
  EXPECT_NE(
      text.find(
          "add rule inet uplinkd-out rule4_v4 meta mark set meta mark & 0xffffc0ff | 0x00003f00 accept\n"),
      std::string::npos)
      << "use_policy default: MMX_DEFAULT, the main table";
  EXPECT_NE(
      text.find("add map inet uplinkd-out policy3_v6 { typeof numgen random mod 4294967295 : verdict; flags "
                "interval; }"),
      std::string::npos);
  EXPECT_NE(text.find("add set inet uplinkd-out ipset1_v4 { type ipv4_addr; flags interval; auto-merge; }"),
            std::string::npos);
}

TEST(OutputRuleset, StickyRuleReusesOnlyCurrentMembers) {
  Fixture f = make();
  const auto lines = lines_of(table_commands(f.plan));
  EXPECT_GE(find_line(lines,
                      "add set inet uplinkd-out sticky1_1_v4 { type ipv4_addr; flags dynamic,timeout; "
                      "timeout 30s; }"),
            0);
  EXPECT_GE(find_line(lines, "add set inet uplinkd-out sticky1_3_v6 { type ipv6_addr;"), 0);
  EXPECT_EQ(find_line(lines, "sticky1_3_v4"), -1) << "an IPv6 uplink has no IPv4 sticky set";
  const int reuse =
      find_line(lines, "rule1_v4 meta mark & 0x00003f00 == 0 ip saddr @sticky1_2_v4 jump mark_00000200");
  const int stale = find_line(lines,
                              "rule1_v4 meta mark & 0x00003f00 == 0x00000200 meta mark & 0x00003f00 != "
                              "@members3_v4 jump mark_clear");
  const int pick = find_line(lines, "rule1_v4 meta mark & 0x00003f00 == 0 numgen");
  const int remember = find_line(lines,
                                 "rule1_v4 meta mark & 0x00003f00 == 0x00000200 update @sticky1_2_v4 { ip "
                                 "saddr }");
  const int done = find_line(lines, "add rule inet uplinkd-out rule1_v4 accept");
  for (int at : {reuse, stale, pick, remember, done}) ASSERT_GE(at, 0);
  EXPECT_LT(reuse, stale);
  EXPECT_LT(stale, pick);
  EXPECT_LT(pick, remember);
  EXPECT_LT(remember, done);

  EXPECT_EQ(sticky_flush_commands(f.plan, 2), "flush set inet uplinkd-out sticky1_2_v4\n");
  EXPECT_EQ(sticky_flush_commands(f.plan, 3), "flush set inet uplinkd-out sticky1_3_v6\n");
  EXPECT_EQ(sticky_flush_commands(f.plan, 9), "");
}

TEST(OutputRuleset, PolicyElementsFollowWeightsAndLastResort) {
  Fixture f = make();
  const std::string both = policy_commands(f.plan, policy::resolve_policies(f.cfg, {"wan", "wanb"}), f.ids);
  // Weights 3 and 2 over numgen's 0 .. 2^32 - 2: the classifier's thresholds (policy::PickTable).
  const policy::PickTable t = policy::build_pick_table({3, 2}, {0x100, 0x200});
  EXPECT_NE(both.find("add element inet uplinkd-out policy3_v4 { 0-" + std::to_string(t.thresholds[0]) +
                      " : jump mark_00000100, " + std::to_string(uint64_t{t.thresholds[0]} + 1) +
                      "-4294967294 : jump mark_00000200 }"),
            std::string::npos)
      << both;
  EXPECT_NE(both.find("add element inet uplinkd-out members3_v4 { 0x00000100, 0x00000200 }"),
            std::string::npos);
  // Before each refill, the old elements go, in the same transaction.
  EXPECT_LT(both.find("flush map inet uplinkd-out policy3_v4"),
            both.find("add element inet uplinkd-out policy3_v4"));

  const std::string none = policy_commands(f.plan, policy::resolve_policies(f.cfg, {}), f.ids);
  EXPECT_NE(none.find("add element inet uplinkd-out policy4_v4 { 0-4294967294 : jump mark_00003d00 }"),
            std::string::npos)
      << "wan_only's last_resort blackhole";
  EXPECT_NE(none.find("add element inet uplinkd-out policy3_v4 { 0-4294967294 : jump mark_00003e00 }"),
            std::string::npos)
      << "balanced's default last_resort unreachable";
  EXPECT_EQ(none.find("add element inet uplinkd-out members3_v4"), std::string::npos);
}

TEST(OutputRuleset, SourceFixMasqueradesOnlyRouterPacketsWithAForeignSource) {
  Fixture f = make();
  const std::string text = table_commands(f.plan);
  EXPECT_NE(
      text.find(
          "add rule inet uplinkd-out source_fix meta nfproto ipv4 oifname \"eth2\" meta mark & 0x00003f00 "
          "== 0x00000200 fib saddr type local fib saddr . oif type != local masquerade\n"),
      std::string::npos)
      << text;
}

TEST(OutputRuleset, AddressSetsAreRefilledPerFamily) {
  std::vector<netlink::SetPrefix> prefixes = {{*IpAddress::parse("192.0.2.0"), 24},
                                              {*IpAddress::parse("2001:db8::"), 32},
                                              {*IpAddress::parse("10.1.2.3"), 32}};
  EXPECT_EQ(address_set_commands("t", "connected", prefixes),
            "flush set inet t connected_v4\n"
            "add element inet t connected_v4 { 192.0.2.0/24, 10.1.2.3/32 }\n"
            "flush set inet t connected_v6\n"
            "add element inet t connected_v6 { 2001:db8::/32 }\n");
  EXPECT_EQ(address_set_commands("t", "ipset2", {}),
            "flush set inet t ipset2_v4\nflush set inet t ipset2_v6\n");
}

}  // namespace
}  // namespace uplinkd::local_out
