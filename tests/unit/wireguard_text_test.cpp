// `uplinkctl wireguard` text from the daemon's JSON answer.
#include "wireguard/wireguard_text.h"

#include <gtest/gtest.h>

namespace uplinkd::wireguard {
namespace {

TEST(WireguardText, PeersRoutesAndProblems) {
  nlohmann::json answer = nlohmann::json::parse(R"({
    "peers": [
      {"device": "wg0", "peer": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "endpoint": "203.0.113.5:51820",
       "implementation": "kernel", "source": "discovered", "policy": "failover", "policy_from": "rule 'default_rule_v4'",
       "uplink": "wan", "uplink_device": "eth1", "steered_packets": 42,
       "stale_routes": [], "fixed_routes": ["203.0.113.5 via 198.51.100.1 dev eth2 table main proto static metric 20 -> via 192.0.2.1 dev eth1"],
       "guard_route": "", "problems": []},
      {"device": "wg0", "peer": "BBECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "endpoint": "none",
       "implementation": "kernel", "source": "discovered", "policy": "failover", "policy_from": "rule 'default_rule_v4'",
       "uplink": null, "uplink_device": null, "steered_packets": 0, "stale_routes": [], "fixed_routes": [],
       "guard_route": "", "problems": ["no endpoint yet (the peer has not contacted us): nothing to steer"]}
    ],
    "problems": ["mwan3:30: option 'endpoint': 'vpn.example.com:51820' ..."]})");
  EXPECT_EQ(
      format_wireguard(answer),
      "WireGuard peers:\n"
      " wg0 peer AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= endpoint 203.0.113.5:51820 policy failover "
      "(rule 'default_rule_v4') uplink wan (eth1), 42 packets steered\n"
      "   fixed route: 203.0.113.5 via 198.51.100.1 dev eth2 table main proto static metric 20 -> via "
      "192.0.2.1 dev eth1\n"
      " wg0 peer BBECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8= endpoint none policy failover "
      "(rule 'default_rule_v4') uplink none, 0 packets steered\n"
      "   problem: no endpoint yet (the peer has not contacted us): nothing to steer\n"
      "Problems:\n"
      " mwan3:30: option 'endpoint': 'vpn.example.com:51820' ...\n");
}

TEST(WireguardText, NoPeers) {
  EXPECT_EQ(format_wireguard(nlohmann::json::object()), "WireGuard peers:\n (none found)\n");
}

}  // namespace
}  // namespace uplinkd::wireguard

namespace uplinkd::wireguard {
namespace {

config::Config two_uplinks() {
  config::Config cfg;
  cfg.globals.mmx_mask = 0x3F00;
  for (uint32_t id : {1U, 2U, 3U}) {
    config::InterfaceConfig i;
    i.name = id == 1 ? "wan" : id == 2 ? "wan2" : "wan3";
    i.id = id;
    i.enabled = id != 3;
    cfg.interfaces.push_back(i);
  }
  return cfg;
}

TEST(WireguardFwmark, AnUplinksMarkPinsTheTunnel) {
  const std::string problem = fwmark_problem("wg0", 0x10200, two_uplinks());
  EXPECT_NE(problem.find(
                "device wg0 has fwmark 0x10200, whose bits under mmx_mask 0x3f00 are interface wan2's mark"),
            std::string::npos)
      << problem;
  EXPECT_NE(problem.find("unreachable while wan2 is down"), std::string::npos) << problem;
  EXPECT_NE(problem.find("wg set wg0 fwmark"), std::string::npos) << problem;
}

TEST(WireguardFwmark, BlackholeAndUnreachableMarksDropIt) {
  EXPECT_NE(fwmark_problem("wg0", 0x3d00, two_uplinks()).find("blackhole"), std::string::npos);
  EXPECT_NE(fwmark_problem("wg0", 0x3e00, two_uplinks()).find("unreachable mark"), std::string::npos);
}

TEST(WireguardFwmark, HarmlessMarksSayNothing) {
  EXPECT_EQ(fwmark_problem("wg0", 0, two_uplinks()), "");
  EXPECT_EQ(fwmark_problem("wg0", 0xca6c, two_uplinks()), "")
      << "wg-quick's 51820: bits 0xa00 are id 10, which no interface has";
  EXPECT_EQ(fwmark_problem("wg0", 0x3f00, two_uplinks()), "") << "mwan3's default mark: the main table";
  EXPECT_EQ(fwmark_problem("wg0", 0x300, two_uplinks()), "") << "wan3 is disabled: no rule for its mark";
  EXPECT_EQ(fwmark_problem("wg0", 0x500, two_uplinks()), "") << "an id no interface has";
}

}  // namespace
}  // namespace uplinkd::wireguard
