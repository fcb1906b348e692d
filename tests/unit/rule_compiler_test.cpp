// The rule compiler: mwan3 rule options into struct rule_entry, errors that name file, line and option,
// and the text and JSON `uplinkctl rules` shows.
#include "policy/rule_compiler.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "config/uci.h"

namespace uplinkd::policy {
namespace {

using config::ConfigError;

// Two uplinks and two policies; rules follow. Ids: balanced 3, wan_only 4.
const std::string kPrelude =
    "config interface 'wan'\n"
    "\toption enabled '1'\n"
    "\toption device 'eth1'\n"
    "config interface 'wanb'\n"
    "\toption enabled '1'\n"
    "\toption device 'eth2'\n"
    "config member 'wan_m1'\n"
    "\toption interface 'wan'\n"
    "config member 'wanb_m1'\n"
    "\toption interface 'wanb'\n"
    "config policy 'balanced'\n"
    "\tlist use_member 'wan_m1'\n"
    "\tlist use_member 'wanb_m1'\n"
    "config policy 'wan_only'\n"
    "\tlist use_member 'wan_m1'\n";

int prelude_lines() {
  int n = 0;
  for (char c : kPrelude) {
    n += c == '\n' ? 1 : 0;
  }
  return n;
}

// The line of the first rule's header.
int first_rule_line() { return prelude_lines() + 1; }

struct Compiled {
  config::Config cfg;
  CompiledRules rules;
};

// Parses prelude + `rules` and compiles with the source (per-option lines), or without it.
Compiled compile(const std::string& rules, const IfindexResolver& resolve = {}, bool with_source = true) {
  const std::string text = kPrelude + rules;
  Compiled c;
  c.cfg = config::parse(text, "mwan3");
  config::uci::Package pkg = config::uci::parse(text, "mwan3");
  c.rules = compile_rules(c.cfg, assign_policy_ids(c.cfg), resolve, with_source ? &pkg : nullptr);
  return c;
}

const rule_entry& only_entry(const Compiled& c) {
  EXPECT_EQ(c.rules.entries.size(), 1U);
  return c.rules.entries.at(0);
}

std::vector<uint8_t> v4(const char* text) {
  in_addr a{};
  EXPECT_EQ(inet_pton(AF_INET, text, &a), 1) << text;
  std::vector<uint8_t> out(16, 0);
  std::memcpy(out.data(), &a, 4);
  return out;
}

std::vector<uint8_t> v6(const char* text) {
  in6_addr a{};
  EXPECT_EQ(inet_pton(AF_INET6, text, &a), 1) << text;
  return std::vector<uint8_t>(a.s6_addr, a.s6_addr + 16);
}

std::vector<uint8_t> bytes_of(const addr_match& m) { return std::vector<uint8_t>(m.addr, m.addr + 16); }

// ---- what each option compiles to -------------------------------------------------------------

TEST(RuleCompiler, FullRuleFieldByField) {
  Compiled c = compile(
      "config rule 'https'\n"
      "\toption family 'ipv4'\n"
      "\toption proto 'tcp'\n"
      "\tlist src_ip '192.168.1.0/24'\n"
      "\tlist src_ip '10.0.0.7'\n"
      "\toption src_port '1000-2000,3000:3001'\n"
      "\toption dest_ip '203.0.113.0/24'\n"
      "\toption dest_port '443'\n"
      "\toption sticky '1'\n"
      "\toption timeout '300'\n"
      "\toption use_policy 'balanced'\n");
  const rule_entry& e = only_entry(c);
  EXPECT_EQ(e.family, 4);
  EXPECT_EQ(e.proto, 6);
  ASSERT_EQ(e.n_src, 2);
  EXPECT_EQ(e.src[0].family, 4);
  EXPECT_EQ(e.src[0].prefixlen, 24);
  EXPECT_EQ(bytes_of(e.src[0]), v4("192.168.1.0"));
  EXPECT_EQ(e.src[1].prefixlen, 32);
  EXPECT_EQ(bytes_of(e.src[1]), v4("10.0.0.7"));
  ASSERT_EQ(e.n_dst, 1);
  EXPECT_EQ(bytes_of(e.dst[0]), v4("203.0.113.0"));
  EXPECT_EQ(e.dst[0].prefixlen, 24);
  ASSERT_EQ(e.n_sport, 2);
  EXPECT_EQ(e.sport[0].lo, 1000);
  EXPECT_EQ(e.sport[0].hi, 2000);
  EXPECT_EQ(e.sport[1].lo, 3000);
  EXPECT_EQ(e.sport[1].hi, 3001);
  ASSERT_EQ(e.n_dport, 1);
  EXPECT_EQ(e.dport[0].lo, 443);
  EXPECT_EQ(e.dport[0].hi, 443);
  EXPECT_EQ(e.sticky, 1);
  EXPECT_EQ(e.sticky_timeout_s, 300U);
  EXPECT_EQ(e.set_id, 0);
  EXPECT_EQ(e.src_ifindex, 0U);
  EXPECT_EQ(e.policy_id, 3U);
  const RuleInfo& info = c.rules.info.at(0);
  EXPECT_EQ(info.name, "https");
  EXPECT_EQ(info.line, first_rule_line());
  EXPECT_EQ(info.use_policy, "balanced");
  EXPECT_TRUE(info.warnings.empty());
}

TEST(RuleCompiler, AbsentOptionsMatchAnything) {
  Compiled c = compile("config rule 'all'\n\toption use_policy 'wan_only'\n");
  const rule_entry& e = only_entry(c);
  rule_entry zero{};
  zero.policy_id = 4;
  EXPECT_EQ(std::memcmp(&e, &zero, sizeof e), 0) << "every byte but policy_id is 0";
  EXPECT_EQ(c.rules.info[0].timeout_s, 600U);
  EXPECT_TRUE(c.rules.sets.empty());
}

TEST(RuleCompiler, EmptyOptionsCountAsAbsent) {
  Compiled c = compile(
      "config rule 'r'\n\toption src_ip ''\n\toption dest_port ''\n\toption ipset ''\n\toption use_policy "
      "'balanced'\n");
  const rule_entry& e = only_entry(c);
  EXPECT_EQ(e.n_src, 0);
  EXPECT_EQ(e.n_dport, 0);
  EXPECT_EQ(e.set_id, 0);
}

struct ProtoCase {
  const char* name;
  const char* proto;
  const char* family;
  uint8_t number;
};

const ProtoCase kProtoCases[] = {
    {"all", "all", "any", 0},
    {"tcp", "tcp", "any", 6},
    {"udp", "udp", "any", 17},
    {"icmp", "icmp", "ipv4", 1},
    {"icmp_any", "icmp", "any", 1},
    {"icmpv6", "icmpv6", "ipv6", 58},
    {"ipv6_icmp", "ipv6-icmp", "any", 58},
    {"upper_case", "TCP", "any", 6},
    {"gre", "gre", "any", 47},
    {"number", "47", "any", 47},
    {"zero_is_all", "0", "any", 0},
    {"sctp", "sctp", "any", 132},
};

class ProtoTable : public testing::TestWithParam<ProtoCase> {};

TEST_P(ProtoTable, Number) {
  const ProtoCase& p = GetParam();
  Compiled c = compile(std::string("config rule 'r'\n\toption proto '") + p.proto + "'\n\toption family '" +
                       p.family + "'\n\toption use_policy 'balanced'\n");
  EXPECT_EQ(only_entry(c).proto, p.number);
}

INSTANTIATE_TEST_SUITE_P(Names, ProtoTable, testing::ValuesIn(kProtoCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(RuleCompiler, FamilyWords) {
  Compiled c = compile(
      "config rule 'a'\n\toption family 'any'\n\toption use_policy 'balanced'\n"
      "config rule 'b'\n\toption family 'ipv4'\n\toption use_policy 'balanced'\n"
      "config rule 'c'\n\toption family 'ipv6'\n\toption use_policy 'balanced'\n"
      "config rule 'd'\n\toption use_policy 'balanced'\n");
  ASSERT_EQ(c.rules.entries.size(), 4U);
  EXPECT_EQ(c.rules.entries[0].family, 0);
  EXPECT_EQ(c.rules.entries[1].family, 4);
  EXPECT_EQ(c.rules.entries[2].family, 6);
  EXPECT_EQ(c.rules.entries[3].family, 0);
}

TEST(RuleCompiler, Ipv6AndMixedFamilyLists) {
  Compiled c = compile(
      "config rule 'v6'\n"
      "\toption family 'ipv6'\n"
      "\toption dest_ip '2001:db8::/32,2001:db8:ff::1'\n"
      "\toption use_policy 'balanced'\n"
      "config rule 'mixed'\n"
      "\toption src_ip '192.168.1.0/24, 2001:db8:1::/64'\n"
      "\toption use_policy 'balanced'\n");
  ASSERT_EQ(c.rules.entries.size(), 2U);
  const rule_entry& e = c.rules.entries[0];
  ASSERT_EQ(e.n_dst, 2);
  EXPECT_EQ(e.dst[0].family, 6);
  EXPECT_EQ(e.dst[0].prefixlen, 32);
  EXPECT_EQ(bytes_of(e.dst[0]), v6("2001:db8::"));
  EXPECT_EQ(e.dst[1].prefixlen, 128);
  EXPECT_EQ(bytes_of(e.dst[1]), v6("2001:db8:ff::1"));
  // family any: each address keeps its own family, so the rule matches IPv4 from the first network
  // and IPv6 from the second, as mwan3's separate iptables and ip6tables rules would.
  const rule_entry& m = c.rules.entries[1];
  ASSERT_EQ(m.n_src, 2);
  EXPECT_EQ(m.family, 0);
  EXPECT_EQ(m.src[0].family, 4);
  EXPECT_EQ(m.src[1].family, 6);
  EXPECT_EQ(m.src[1].prefixlen, 64);
}

TEST(RuleCompiler, DottedNetmaskAndZeroPrefix) {
  Compiled c = compile(
      "config rule 'r'\n\toption src_ip '10.1.0.0/255.255.0.0'\n\toption dest_ip '0.0.0.0/0'\n"
      "\toption use_policy 'balanced'\n");
  const rule_entry& e = only_entry(c);
  EXPECT_EQ(e.src[0].prefixlen, 16);
  EXPECT_EQ(e.dst[0].prefixlen, 0);
  EXPECT_EQ(e.dst[0].family, 4);
}

TEST(RuleCompiler, BuiltinPoliciesHaveReservedIdsEvenWhenAPolicyHasTheName) {
  Compiled c = compile(
      "config policy 'default'\n\tlist use_member 'wan_m1'\n"
      "config rule 'a'\n\toption use_policy 'default'\n"
      "config rule 'b'\n\toption use_policy 'unreachable'\n"
      "config rule 'c'\n\toption use_policy 'blackhole'\n"
      "config rule 'd'\n\toption use_policy 'wan_only'\n");
  ASSERT_EQ(c.rules.entries.size(), 4U);
  EXPECT_EQ(c.rules.entries[0].policy_id, kPolicyIdDefault);
  EXPECT_EQ(c.rules.entries[1].policy_id, kPolicyIdUnreachable);
  EXPECT_EQ(c.rules.entries[2].policy_id, kPolicyIdBlackhole);
  EXPECT_EQ(c.rules.entries[3].policy_id, 4U);
}

TEST(RuleCompiler, PolicyIdsFollowFileOrderFromThree) {
  config::Config cfg = config::parse(kPrelude, "mwan3");
  auto ids = assign_policy_ids(cfg);
  EXPECT_EQ(ids, (std::map<std::string, uint32_t>{{"balanced", 3}, {"wan_only", 4}}));
}

TEST(RuleCompiler, TooManyPoliciesNamesTheFirstOneOver) {
  std::string text = kPrelude;
  const int max_user = UPLINKD_MAX_POLICIES - kFirstUserPolicyId;  // 61; the prelude has 2
  int line = prelude_lines();
  int over_line = 0;
  for (int i = 2; i <= max_user; ++i) {
    text += "config policy 'p" + std::to_string(i) + "'\n";
    ++line;
    if (i == max_user) {
      over_line = line;
    }
  }
  config::Config cfg = config::parse(text, "mwan3");
  try {
    assign_policy_ids(cfg);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line, over_line);
    EXPECT_NE(std::string(e.what()).find("policy 'p61': more than 61 policies"), std::string::npos)
        << e.what();
  }
}

TEST(RuleCompiler, UnknownPolicyIdIsAnErrorAtUsePolicy) {
  const std::string text = kPrelude + "config rule 'r'\n\toption use_policy 'wan_only'\n";
  config::Config cfg = config::parse(text, "mwan3");
  config::uci::Package pkg = config::uci::parse(text, "mwan3");
  try {
    compile_rules(cfg, {{"balanced", 3}}, {}, &pkg);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line, first_rule_line() + 1);
    EXPECT_EQ(e.option, "use_policy");
  }
  EXPECT_THROW(compile_rules(cfg, {{"wan_only", 1}}, {}, &pkg), std::invalid_argument);  // a reserved id
}

TEST(RuleCompiler, SetIdsInOrderOfFirstUse) {
  Compiled c = compile(
      "config rule 'a'\n\toption ipset 'streaming'\n\toption use_policy 'balanced'\n"
      "config rule 'b'\n\toption ipset 'office'\n\toption use_policy 'balanced'\n"
      "config rule 'c'\n\toption ipset 'streaming'\n\toption use_policy 'balanced'\n"
      "config rule 'd'\n\toption use_policy 'balanced'\n");
  ASSERT_EQ(c.rules.entries.size(), 4U);
  EXPECT_EQ(c.rules.entries[0].set_id, 1);
  EXPECT_EQ(c.rules.entries[1].set_id, 2);
  EXPECT_EQ(c.rules.entries[2].set_id, 1);
  EXPECT_EQ(c.rules.entries[3].set_id, 0);
  EXPECT_EQ(c.rules.sets, (std::vector<std::string>{"streaming", "office"}));
  EXPECT_EQ(c.rules.info[2].set, "streaming");
}

TEST(RuleCompiler, SeventeenthSetIsAnErrorAtItsIpsetLine) {
  std::string rules;
  for (int i = 1; i <= UPLINKD_MAX_SETS + 1; ++i) {
    rules += "config rule 'r" + std::to_string(i) + "'\n\toption ipset 'set" + std::to_string(i) +
             "'\n\toption use_policy 'balanced'\n";
  }
  try {
    compile(rules);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line, first_rule_line() + 3 * UPLINKD_MAX_SETS + 1);
    EXPECT_EQ(e.option, "ipset");
    EXPECT_NE(std::string(e.what()).find("'set17'"), std::string::npos) << e.what();
  }
}

TEST(RuleCompiler, TooManyRulesNamesTheFirstOneOver) {
  std::string rules;
  for (int i = 0; i <= UPLINKD_MAX_RULES; ++i) {
    rules += "config rule\n\toption use_policy 'balanced'\n";
  }
  try {
    compile(rules);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line, first_rule_line() + 2 * UPLINKD_MAX_RULES);
    EXPECT_NE(std::string(e.what()).find("rule '@rule[256]': more than 256 rules"), std::string::npos)
        << e.what();
  }
}

TEST(RuleCompiler, SrcIfaceResolvedNowOrLater) {
  std::map<std::string, uint32_t> devices = {{"lan", 7}};
  IfindexResolver resolve = [&](const std::string& name) {
    auto it = devices.find(name);
    return it == devices.end() ? 0U : it->second;
  };
  Compiled c = compile(
      "config rule 'from_lan'\n\toption src_iface 'lan'\n\toption use_policy 'balanced'\n"
      "config rule 'from_guest'\n\toption src_iface 'guest'\n\toption use_policy 'balanced'\n"
      "config rule 'any'\n\toption use_policy 'balanced'\n",
      resolve);
  ASSERT_EQ(c.rules.entries.size(), 3U);
  EXPECT_EQ(c.rules.entries[0].src_ifindex, 7U);
  EXPECT_FALSE(c.rules.info[0].src_iface_pending);
  EXPECT_EQ(c.rules.entries[1].src_ifindex, kUnresolvedIfindex);  // kept in place, matching nothing
  EXPECT_TRUE(c.rules.info[1].src_iface_pending);
  EXPECT_EQ(c.rules.info[1].src_iface, "guest");
  EXPECT_EQ(c.rules.entries[2].src_ifindex, 0U);

  EXPECT_TRUE(refresh_src_ifindexes(c.rules, resolve).empty());
  devices["guest"] = 9;  // the guest bridge appears
  devices["lan"] = 11;   // and lan's was re-created
  EXPECT_EQ(refresh_src_ifindexes(c.rules, resolve), (std::vector<size_t>{0, 1}));
  EXPECT_EQ(c.rules.entries[0].src_ifindex, 11U);
  EXPECT_EQ(c.rules.entries[1].src_ifindex, 9U);
  EXPECT_FALSE(c.rules.info[1].src_iface_pending);
  devices.erase("guest");  // and goes away again
  EXPECT_EQ(refresh_src_ifindexes(c.rules, resolve), (std::vector<size_t>{1}));
  EXPECT_EQ(c.rules.entries[1].src_ifindex, kUnresolvedIfindex);
  EXPECT_TRUE(c.rules.info[1].src_iface_pending);
}

TEST(RuleCompiler, WithoutResolverEverySrcIfaceIsPending) {
  Compiled c = compile("config rule 'r'\n\toption src_iface 'lan'\n\toption use_policy 'balanced'\n");
  EXPECT_EQ(only_entry(c).src_ifindex, kUnresolvedIfindex);
  EXPECT_TRUE(c.rules.info[0].src_iface_pending);
}

TEST(RuleCompiler, StickyOnlyWithAPolicy) {
  Compiled c = compile(
      "config rule 'a'\n\toption sticky '1'\n\toption use_policy 'default'\n"
      "config rule 'b'\n\toption sticky '1'\n\toption use_policy 'balanced'\n"
      "config rule 'c'\n\toption timeout '30'\n\toption use_policy 'balanced'\n");
  ASSERT_EQ(c.rules.entries.size(), 3U);
  EXPECT_EQ(c.rules.entries[0].sticky, 0);
  ASSERT_EQ(c.rules.info[0].warnings.size(), 1U);
  EXPECT_NE(c.rules.info[0].warnings[0].find("sticky ignored"), std::string::npos);
  EXPECT_EQ(c.rules.entries[1].sticky, 1);
  EXPECT_EQ(c.rules.entries[1].sticky_timeout_s, 600U);
  EXPECT_EQ(c.rules.entries[2].sticky, 0);
  EXPECT_EQ(c.rules.entries[2].sticky_timeout_s, 0U);
  EXPECT_EQ(c.rules.info[2].timeout_s, 30U);
}

TEST(RuleCompiler, UnknownOptionIsWarnedOnceWithItsLine) {
  Compiled c = compile("config rule 'r'\n\toption use_policy 'balanced'\n\toption dst_port '443'\n");
  EXPECT_TRUE(c.rules.info[0].warnings.empty()) << "said by the configuration's warnings, not twice";
  ASSERT_EQ(c.cfg.warnings.size(), 1U);
  EXPECT_EQ(c.cfg.warnings[0],
            "mwan3:" + std::to_string(first_rule_line() + 2) +
                ": option 'dst_port': unknown in rule 'r', ignored; did you mean 'dest_port'?");
}

TEST(RuleCompiler, ShippedExampleCompiles) {
  const std::string data = std::string(UPLINKD_SOURCE_DIR) + "/tests/unit/testdata";
  config::Config cfg = config::load(data + "/mwan3-two-wan", data + "/network-openwrt");
  CompiledRules rules = compile_rules(cfg, assign_policy_ids(cfg), {});
  EXPECT_EQ(format_rules(rules_json(rules)), "default_v4: ipv4 to 0.0.0.0/0 -> failover\n");
}

// ---- malformed rules --------------------------------------------------------------------------

struct ErrorCase {
  const char* name;
  const char* body;  // lines after `config rule 'r'`
  int line;          // expected line, counted from the rule header (0)
  const char* option;
  const char* message;  // a part of what() after "mwan3:<line>: option '<option>': "
};

const ErrorCase kErrorCases[] = {
    {"proto_word", "\toption proto 'tcpp'\n", 1, "proto",
     "'tcpp' is not a protocol in rule 'r'; accepted: all, tcp"},
    {"proto_number", "\toption proto '256'\n", 1, "proto", "'256' is not a protocol"},
    {"icmp_for_ipv6", "\toption family 'ipv6'\n\toption proto 'icmp'\n", 2, "proto",
     "'icmp' never matches IPv6 packets (the rule has family ipv6) in rule 'r'; accepted: icmpv6"},
    {"icmpv6_for_ipv4", "\toption family 'ipv4'\n\toption proto 'icmpv6'\n", 2, "proto",
     "never matches IPv4"},
    {"not_an_address", "\toption src_ip 'lan'\n", 1, "src_ip",
     "'lan' is not an address or network in rule 'r'"},
    {"host_bits_v4", "\toption src_ip '10.0.0.1/8'\n", 1, "src_ip",
     "'10.0.0.1/8' has host bits set past the prefix length in rule 'r'; accepted: the network 10.0.0.0/8, "
     "or the single address 10.0.0.1"},
    {"host_bits_v6", "\toption dest_ip '2001:db8::1/64'\n", 1, "dest_ip",
     "accepted: the network 2001:db8::/64"},
    {"prefix_v4", "\toption src_ip '10.0.0.0/33'\n", 1, "src_ip",
     "has a bad prefix length in rule 'r'; accepted: /0 to /32"},
    {"prefix_v6", "\toption dest_ip '2001:db8::/129'\n", 1, "dest_ip", "accepted: /0 to /128"},
    {"prefix_text", "\toption dest_ip '10.0.0.0/x'\n", 1, "dest_ip", "has a bad prefix length"},
    {"netmask_holes", "\toption dest_ip '10.0.0.0/255.0.255.0'\n", 1, "dest_ip", "has a bad prefix length"},
    {"v6_in_ipv4_rule", "\toption family 'ipv4'\n\toption dest_ip '2001:db8::/32'\n", 2, "dest_ip",
     "is not an IPv4 address (the rule has family ipv4)"},
    {"v4_in_ipv6_rule", "\toption family 'ipv6'\n\toption src_ip '10.0.0.0/8'\n", 2, "src_ip",
     "is not an IPv6 address"},
    {"families_never_meet", "\toption src_ip '10.0.0.0/8'\n\toption dest_ip '2001:db8::/32'\n", 2, "dest_ip",
     "'2001:db8::/32' is IPv6 but src_ip holds only IPv4 addresses, so the rule can never match"},
    {"empty_list_entry", "\toption src_ip '10.0.0.0/8,,192.168.0.0/16'\n", 1, "src_ip",
     "'' is not an address"},
    {"nine_addresses",
     "\toption dest_ip '10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6,10.0.0.7,10.0.0.8,10.0.0.9'\n",
     1, "dest_ip", "'10.0.0.9' is address number 9 in rule 'r'; accepted: at most 8"},
    {"nine_list_lines",
     "\tlist src_ip '10.0.0.1'\n\tlist src_ip '10.0.0.2'\n\tlist src_ip '10.0.0.3'\n\tlist src_ip "
     "'10.0.0.4'\n"
     "\tlist src_ip '10.0.0.5'\n\tlist src_ip '10.0.0.6'\n\tlist src_ip '10.0.0.7'\n\tlist src_ip "
     "'10.0.0.8'\n"
     "\tlist src_ip '10.0.0.9'\n",
     9, "src_ip", "'10.0.0.9' is address number 9"},
    {"bad_second_list_line", "\tlist dest_ip '10.0.0.0/8'\n\tlist dest_ip '192.168.1.1/16'\n", 2, "dest_ip",
     "host bits"},
    {"ports_without_proto", "\toption dest_port '443'\n", 1, "dest_port",
     "'443' needs proto tcp or udp in rule 'r' (proto is all; mwan3 ignores ports then, so the rule would "
     "match all such traffic); accepted: option proto tcp or udp, or no dest_port"},
    {"ports_with_icmp", "\toption proto 'icmp'\n\toption src_port '1000'\n", 2, "src_port",
     "(proto is icmp;"},
    {"port_zero", "\toption proto 'tcp'\n\toption dest_port '0'\n", 2, "dest_port", "'0' is out of range"},
    {"port_too_high", "\toption proto 'udp'\n\toption dest_port '65536'\n", 2, "dest_port",
     "is out of range"},
    {"range_backwards", "\toption proto 'tcp'\n\toption dest_port '2000-1000'\n", 2, "dest_port",
     "'2000-1000' is a range whose start is above its end"},
    {"port_name", "\toption proto 'tcp'\n\toption dest_port 'https'\n", 2, "dest_port",
     "'https' is not a port or port range in rule 'r'; accepted: ports 1 to 65535"},
    {"open_range", "\toption proto 'tcp'\n\toption src_port '1000:'\n", 2, "src_port", "is not a port"},
    {"nine_ports", "\toption proto 'tcp'\n\toption dest_port '1,2,3,4,5,6,7,8,9'\n", 2, "dest_port",
     "'9' is port entry number 9 in rule 'r'; accepted: at most 8"},
    {"set_with_space", "\toption ipset 'my set'\n", 1, "ipset", "'my set' is not a set name"},
    {"two_sets", "\tlist ipset 'a'\n\tlist ipset 'b'\n", 2, "ipset", "'a,b' names more than one set"},
    {"long_set_name", "\toption ipset 'abcdefghijklmnopqrstuvwxyz0123456'\n", 1, "ipset",
     "is not a set name"},
};

class ErrorTable : public testing::TestWithParam<ErrorCase> {};

std::string rule_with(const char* body) {
  return std::string("config rule 'r'\n") + body + "\toption use_policy 'balanced'\n";
}

TEST_P(ErrorTable, NamesFileLineAndOption) {
  const ErrorCase& c = GetParam();
  try {
    compile(rule_with(c.body));
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    const int line = first_rule_line() + c.line;
    EXPECT_EQ(e.file, "mwan3");
    EXPECT_EQ(e.line, line);
    EXPECT_EQ(e.option, c.option);
    const std::string head = "mwan3:" + std::to_string(line) + ": option '" + c.option + "': ";
    EXPECT_EQ(std::string(e.what()).rfind(head, 0), 0U) << e.what();
    EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
  }
}

TEST_P(ErrorTable, WithoutSourceNamesTheRuleHeader) {
  const ErrorCase& c = GetParam();
  try {
    compile(rule_with(c.body), {}, /*with_source=*/false);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.line, first_rule_line());
    EXPECT_EQ(e.option, c.option);
  }
}

INSTANTIATE_TEST_SUITE_P(Malformed, ErrorTable, testing::ValuesIn(kErrorCases),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- text and JSON ----------------------------------------------------------------------------

struct TextCase {
  const char* name;
  const char* body;  // lines after `config rule '<name>'`, before use_policy
  const char* policy;
  const char* text;
};

const TextCase kTextCases[] = {
    {"https", "\toption proto 'tcp'\n\toption dest_port '443'\n\toption sticky '1'\n", "balanced",
     "https: tcp dport 443 -> balanced (sticky 600s)"},
    {"all", "", "wan_only", "all: all -> wan_only"},
    {"voip",
     "\toption family 'ipv4'\n\toption proto 'udp'\n\toption src_ip '192.168.1.10/32'\n"
     "\toption src_port '5060:5080'\n",
     "wan_only", "voip: ipv4 udp from 192.168.1.10 sport 5060-5080 -> wan_only"},
    {"guests", "\toption src_iface 'guest'\n\toption ipset 'vpn'\n", "balanced",
     "guests: iif guest (no device yet) ipset vpn -> balanced"},
    {"lan", "\toption src_iface 'lan'\n", "blackhole", "lan: iif lan -> blackhole"},
    {"nets",
     "\tlist dest_ip '10.0.0.0/8'\n\tlist dest_ip '2001:db8::/32'\n\toption proto 'tcp'\n"
     "\toption dest_port '80,443,8000-8100'\n\toption timeout '60'\n\toption sticky 'yes'\n",
     "balanced", "nets: tcp to 10.0.0.0/8,2001:db8::/32 dport 80,443,8000-8100 -> balanced (sticky 60s)"},
    {"proto_num", "\toption proto '47'\n", "default", "proto_num: gre -> default"},
    {"proto_odd", "\toption proto '253'\n", "default", "proto_odd: 253 -> default"},
};

class TextTable : public testing::TestWithParam<TextCase> {};

TEST_P(TextTable, RendersLikeMwan3Words) {
  const TextCase& t = GetParam();
  IfindexResolver resolve = [](const std::string& name) { return name == "lan" ? 3U : 0U; };
  Compiled c = compile(
      std::string("config rule '") + t.name + "'\n" + t.body + "\toption use_policy '" + t.policy + "'\n",
      resolve);
  EXPECT_EQ(rule_text(rules_json(c.rules).at(0)), t.text);
}

INSTANTIATE_TEST_SUITE_P(Rules, TextTable, testing::ValuesIn(kTextCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(RuleJson, CarriesEveryField) {
  IfindexResolver resolve = [](const std::string&) { return 5U; };
  Compiled c = compile(
      "config rule 'https'\n\toption family 'ipv4'\n\toption proto 'tcp'\n\toption src_iface 'lan'\n"
      "\toption src_ip '192.168.1.0/24'\n\toption dest_port '443'\n\toption ipset 'cdn'\n"
      "\toption sticky '1'\n\toption timeout '120'\n\toption logging '1'\n\toption use_policy 'balanced'\n",
      resolve);
  nlohmann::json expected = {
      {"name", "https"},
      {"line", first_rule_line()},
      {"family", "ipv4"},
      {"proto", "tcp"},
      {"proto_number", 6},
      {"src_ip", {"192.168.1.0/24"}},
      {"src_port", nlohmann::json::array()},
      {"src_iface", "lan"},
      {"src_ifindex", 5},
      {"src_iface_pending", false},
      {"dest_ip", nlohmann::json::array()},
      {"dest_port", {"443"}},
      {"ipset", "cdn"},
      {"set_id", 1},
      {"sticky", true},
      {"timeout", 120},
      {"use_policy", "balanced"},
      {"policy_id", 3},
      {"logging", true},
      {"warnings", nlohmann::json::array()},
  };
  EXPECT_EQ(rules_json(c.rules), nlohmann::json::array({expected}));
}

TEST(RuleJson, AbsentPartsAreNullOrEmpty) {
  Compiled c = compile("config rule 'r'\n\toption use_policy 'unreachable'\n");
  nlohmann::json j = rules_json(c.rules).at(0);
  EXPECT_TRUE(j["src_iface"].is_null());
  EXPECT_TRUE(j["ipset"].is_null());
  EXPECT_EQ(j["src_ifindex"], 0);
  EXPECT_EQ(j["family"], "any");
  EXPECT_EQ(j["proto"], "all");
  EXPECT_EQ(j["policy_id"], kPolicyIdUnreachable);
}

TEST(RuleJson, FormatRulesOneLineEachInOrder) {
  Compiled c = compile(
      "config rule 'first'\n\toption proto 'udp'\n\toption use_policy 'balanced'\n"
      "config rule 'second'\n\toption use_policy 'wan_only'\n");
  EXPECT_EQ(format_rules(rules_json(c.rules)), "first: udp -> balanced\nsecond: all -> wan_only\n");
  EXPECT_EQ(format_rules(nlohmann::json::array()), "");
}

}  // namespace
}  // namespace uplinkd::policy
