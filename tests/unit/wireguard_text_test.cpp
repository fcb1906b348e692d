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
