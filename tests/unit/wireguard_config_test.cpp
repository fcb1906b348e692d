// `config wireguard` sections (extension): policy by name or from the default rule, static
// endpoints, host names reported but not fatal, and errors naming file, line and option.
#include <gtest/gtest.h>

#include <string>

#include "config/config.h"

namespace uplinkd::config {
namespace {

// Two uplinks, two policies, mwan3's default rules (v4 and v6) after a narrower https rule.
const std::string kBase =
    "config interface 'wan'\n"           // 1
    "\toption enabled '1'\n"             // 2
    "\toption device 'eth1'\n"           // 3
    "config interface 'wanb'\n"          // 4
    "\toption enabled '1'\n"             // 5
    "\toption device 'eth2'\n"           // 6
    "config member 'wan_m1'\n"           // 7
    "\toption interface 'wan'\n"         // 8
    "config member 'wanb_m2'\n"          // 9
    "\toption interface 'wanb'\n"        // 10
    "\toption metric '2'\n"              // 11
    "config policy 'wan_only'\n"         // 12
    "\tlist use_member 'wan_m1'\n"       // 13
    "config policy 'failover'\n"         // 14
    "\tlist use_member 'wan_m1'\n"       // 15
    "\tlist use_member 'wanb_m2'\n"      // 16
    "config rule 'https'\n"              // 17
    "\toption dest_port '443'\n"         // 18
    "\toption proto 'tcp'\n"             // 19
    "\toption use_policy 'wan_only'\n"   // 20
    "config rule 'default_rule_v4'\n"    // 21
    "\toption dest_ip '0.0.0.0/0'\n"     // 22
    "\toption family 'ipv4'\n"           // 23
    "\toption use_policy 'failover'\n"   // 24
    "config rule 'default_rule_v6'\n"    // 25
    "\toption dest_ip '::/0'\n"          // 26
    "\toption family 'ipv6'\n"           // 27
    "\toption use_policy 'wan_only'\n";  // 28

std::string error_of(const std::string& text) {
  try {
    parse(text, "/etc/config/mwan3");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(WireguardConfig, DefaultsWithoutSection) {
  Config cfg = parse(kBase, "mwan3");
  EXPECT_TRUE(cfg.wireguard.empty());
  auto v4 = default_rule_policy(cfg, Family::Ipv4);
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->policy, "failover");
  EXPECT_EQ(v4->rule, "default_rule_v4");
  EXPECT_EQ(v4->line, 21);
  auto v6 = default_rule_policy(cfg, Family::Ipv6);
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->policy, "wan_only");
  EXPECT_EQ(v6->rule, "default_rule_v6");
}

TEST(WireguardConfig, FirstCatchAllRuleWins) {
  // A rule without dest_ip and of family any (mwan3's first match) shadows the later default rules.
  Config cfg = parse(kBase + "config rule 'all'\n\toption use_policy 'wan_only'\n", "mwan3");
  EXPECT_EQ(default_rule_policy(cfg, Family::Ipv4)->rule, "default_rule_v4");
  Config first = parse(
      "config rule 'everything'\n\toption proto 'udp'\n\toption use_policy 'wan_only'\n" + kBase, "mwan3");
  EXPECT_EQ(default_rule_policy(first, Family::Ipv4)->policy, "wan_only");
  EXPECT_EQ(default_rule_policy(first, Family::Ipv6)->rule, "everything");
}

TEST(WireguardConfig, NoDefaultRule) {
  Config cfg =
      parse("config rule 'https'\n\toption dest_port '443'\n\toption use_policy 'default'\n", "mwan3");
  EXPECT_FALSE(default_rule_policy(cfg, Family::Ipv4));
}

TEST(WireguardConfig, SectionWithPolicyEndpointsAndSwitch) {
  Config cfg = parse(kBase +
                         "config wireguard 'wg0'\n"                   // 29
                         "\toption policy 'wan_only'\n"               // 30
                         "\toption fix_endpoint_routes '0'\n"         // 31
                         "\tlist endpoint '203.0.113.5:51820'\n"      // 32
                         "\tlist endpoint '[2001:db8::5]:51821'\n"    // 33
                         "\tlist endpoint 'vpn.example.com:51820'\n"  // 34
                         "\toption clamp_mss '1'\n",                  // 35
                     "mwan3");
  ASSERT_EQ(cfg.wireguard.size(), 1U);
  const WireguardConfig& wg = cfg.wireguard[0];
  EXPECT_EQ(wg.device, "wg0");
  EXPECT_EQ(wg.line, 29);
  EXPECT_EQ(wg.policy, "wan_only");
  EXPECT_FALSE(wg.fix_endpoint_routes);
  EXPECT_TRUE(wg.clamp_mss);
  ASSERT_EQ(wg.endpoints.size(), 2U);
  EXPECT_EQ(wg.endpoints[0].address, *IpAddress::parse("203.0.113.5"));
  EXPECT_EQ(wg.endpoints[0].port, 51820);
  EXPECT_EQ(wg.endpoints[0].line, 32);
  EXPECT_EQ(wg.endpoints[1].address, *IpAddress::parse("2001:db8::5"));
  EXPECT_EQ(wg.endpoints[1].port, 51821);
  ASSERT_EQ(wg.unsupported_endpoints.size(), 1U);
  EXPECT_EQ(wg.unsupported_endpoints[0].rfind("mwan3:34: option 'endpoint': 'vpn.example.com:51820'", 0), 0U)
      << wg.unsupported_endpoints[0];
  EXPECT_NE(wg.unsupported_endpoints[0].find("not supported"), std::string::npos);
  EXPECT_EQ(cfg.find_wireguard("wg0"), &cfg.wireguard[0]);
  EXPECT_EQ(cfg.find_wireguard("wg1"), nullptr);
}

TEST(WireguardConfig, DefaultsInSection) {
  Config cfg = parse(kBase + "config wireguard\n\toption device 'wg-home'\n", "mwan3");
  ASSERT_EQ(cfg.wireguard.size(), 1U);
  EXPECT_EQ(cfg.wireguard[0].device, "wg-home");
  EXPECT_TRUE(cfg.wireguard[0].policy.empty());
  EXPECT_TRUE(cfg.wireguard[0].fix_endpoint_routes);
  EXPECT_FALSE(cfg.wireguard[0].clamp_mss) << "MSS clamping is opt-in";
}

struct BadCase {
  const char* what;
  std::string section;
  std::string expected;  // the start of the message
};

TEST(WireguardConfig, ErrorsNameFileLineAndOption) {
  const BadCase cases[] = {
      {"unknown policy", "config wireguard 'wg0'\n\toption policy 'nosuch'\n",
       "/etc/config/mwan3:30: option 'policy': 'nosuch' is not a policy section in wireguard 'wg0'; "
       "accepted: "
       "wan_only, failover"},
      {"builtin is not a policy", "config wireguard 'wg0'\n\toption policy 'default'\n",
       "/etc/config/mwan3:30: option 'policy': 'default' is not a policy section"},
      {"no port", "config wireguard 'wg0'\n\tlist endpoint '203.0.113.5'\n",
       "/etc/config/mwan3:30: option 'endpoint': '203.0.113.5' is not an endpoint"},
      {"bad port", "config wireguard 'wg0'\n\tlist endpoint '203.0.113.5:70000'\n",
       "/etc/config/mwan3:30: option 'endpoint': '203.0.113.5:70000' has no valid port"},
      {"v6 without brackets", "config wireguard 'wg0'\n\tlist endpoint '2001:db8::5:51820'\n",
       "/etc/config/mwan3:30: option 'endpoint': '2001:db8::5:51820' is not an endpoint"},
      {"v4 in brackets", "config wireguard 'wg0'\n\tlist endpoint '[203.0.113.5]:1'\n",
       "/etc/config/mwan3:30: option 'endpoint': '[203.0.113.5]:1' puts an IPv4 address in brackets"},
      {"bad boolean", "config wireguard 'wg0'\n\toption fix_endpoint_routes 'maybe'\n",
       "/etc/config/mwan3:30: option 'fix_endpoint_routes': 'maybe' is not a boolean"},
      {"bad clamp_mss", "config wireguard 'wg0'\n\toption clamp_mss 'yes please'\n",
       "/etc/config/mwan3:30: option 'clamp_mss': 'yes please' is not a boolean"},
      {"anonymous without device", "config wireguard\n\toption policy 'failover'\n",
       "/etc/config/mwan3:29: option 'device': wireguard '@wireguard[0]' names no WireGuard device"},
      {"twice", "config wireguard 'wg0'\nconfig wireguard\n\toption device 'wg0'\n",
       "/etc/config/mwan3:30: option 'device': wireguard device 'wg0' is configured twice"},
  };
  for (const BadCase& c : cases) {
    std::string message = error_of(kBase + c.section);
    EXPECT_EQ(message.rfind(c.expected, 0), 0U)
        << c.what << ":\n  got      " << message << "\n  expected " << c.expected;
  }
}

}  // namespace
}  // namespace uplinkd::config
