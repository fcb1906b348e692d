// PolicyRules and connected_networks against a real kernel, inside the router namespace of the netns lab;
// `ip` (run in the same namespace) is the independent witness. Besides the lab's wan1, the router gets a
// second uplink wan2 and a LAN device lan0, veth pairs whose peers sit in the isp namespace (only their
// routes matter here; this kernel may have no dummy devices).
#include "netlink/policy_rules.h"

#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <set>
#include <sstream>

#include "netlink/uplink_routes.h"
#include "netns_fixture.h"

namespace uplinkd::netlink {
namespace {

using uplinkd::testing::NetnsTest;
using uplinkd::testing::normalize_lines;

constexpr uint32_t kMask = 0x3f00;

class PolicyRulesTest : public NetnsTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(NetnsTest::SetUp());
    router_ip("link add wan2 type veth peer name wan2p netns " + isp_ns_);
    router_ip("addr add 198.51.100.2/24 dev wan2");
    router_ip("addr add 2001:db8:2::2/64 dev wan2 nodad");
    router_ip("link set wan2 up");
    router_ip("link add lan0 type veth peer name lan0p netns " + isp_ns_);
    router_ip("addr add 10.0.0.1/24 dev lan0");
    router_ip("addr add 2001:db8:a::1/64 dev lan0 nodad");
    router_ip("link set lan0 up");
    isp_ip("link set wan2p up");
    isp_ip("link set lan0p up");
    ASSERT_TRUE(uplinkd::testing::wait_until([&] {
      return show("-6 route show table main").find("fe80::/64 dev lan0") != std::string::npos &&
             show("-6 route show table main").find("fe80::/64 dev wan2") != std::string::npos;
    })) << show("-6 route show table main");
  }

  static int ifindex(const char* device) { return static_cast<int>(if_nametoindex(device)); }

  std::string show(const std::string& args) { return normalize_lines(router_ip(args)); }

  std::string table(const char* family_flag, uint32_t table) {
    auto result = uplinkd::testing::run_command("ip -n " + router_ns_ + " " + family_flag +
                                                " route show table " + std::to_string(table));
    if (result.output.find("FIB table does not exist") != std::string::npos) {
      return "";
    }
    return normalize_lines(result.output);
  }

  // Everything PolicyRules could touch, in one string to compare before and after.
  std::string routing_state() {
    return show("-4 rule show") + show("-6 rule show") + show("-4 route show table all") +
           show("-6 route show table all");
  }

  int sync(PolicyRules& rules, uint32_t table, const char* device, const char* other, int family,
           int* added = nullptr, int* removed = nullptr) {
    std::string error;
    int err = rules.sync_table(table, ifindex(device), family, {ifindex(other)}, &error, added, removed);
    EXPECT_EQ(err, 0) << error;
    return err;
  }

  // The destinations `ip` lists in the main and local tables (first word, or second after a type).
  std::set<std::string> ip_destinations(const char* family_flag) {
    std::set<std::string> out;
    for (const char* t : {"main", "local"}) {
      std::istringstream lines(show(std::string(family_flag) + " route show table " + t));
      std::string line;
      while (std::getline(lines, line)) {
        std::istringstream words(line);
        std::string word;
        words >> word;
        if (word == "local" || word == "broadcast" || word == "anycast" || word == "multicast" ||
            word == "unreachable" || word == "blackhole" || word == "prohibit" || word == "throw") {
          words >> word;
        }
        if (word == "default") {
          continue;
        }
        if (word.find('/') == std::string::npos) {
          word += word.find(':') == std::string::npos ? "/32" : "/128";
        }
        out.insert(word);
      }
    }
    return out;
  }
};

std::set<std::string> strings(const std::vector<RoutePrefix>& prefixes) {
  std::set<std::string> out;
  for (const RoutePrefix& p : prefixes) {
    out.insert(p.str());
  }
  return out;
}

// ---- rules ------------------------------------------------------------------------------------

constexpr const char* kMwan3RulesTwoUplinks =
    "0:\tfrom all lookup local\n"
    "1001:\tfrom all iif wan1 lookup 1\n"
    "1002:\tfrom all iif wan2 lookup 2\n"
    "2001:\tfrom all fwmark 0x100/0x3f00 lookup 1\n"
    "2002:\tfrom all fwmark 0x200/0x3f00 lookup 2\n"
    "2061:\tfrom all fwmark 0x3d00/0x3f00 blackhole\n"
    "2062:\tfrom all fwmark 0x3e00/0x3f00 unreachable\n"
    "3001:\tfrom all fwmark 0x100/0x3f00 unreachable\n"
    "3002:\tfrom all fwmark 0x200/0x3f00 unreachable\n"
    "32766:\tfrom all lookup main\n";

TEST_F(PolicyRulesTest, TwoUplinksGiveExactlyMwan3sRules) {
  UplinkRoutes routes;
  PolicyRules rules;
  std::string error;
  for (int family : {AF_INET, AF_INET6}) {
    ASSERT_EQ(routes.install(1, ifindex("wan1"), family, std::nullopt, 0x100, kMask, 2001, &error), 0)
        << error;
    ASSERT_EQ(routes.install(2, ifindex("wan2"), family, std::nullopt, 0x200, kMask, 2002, &error), 0)
        << error;
    ASSERT_EQ(rules.install_uplink(1, "wan1", family, 0x100, kMask, &error), 0) << error;
    ASSERT_EQ(rules.install_uplink(2, "wan2", family, 0x200, kMask, &error), 0) << error;
    ASSERT_EQ(rules.install_general(family, kMask, &error), 0) << error;
  }
  EXPECT_EQ(show("-4 rule show"), std::string(kMwan3RulesTwoUplinks) + "32767:\tfrom all lookup default\n");
  EXPECT_EQ(show("-6 rule show"), kMwan3RulesTwoUplinks);
}

TEST_F(PolicyRulesTest, InstallingAgainChangesNothing) {
  PolicyRules rules;
  std::string error;
  ASSERT_EQ(rules.install_uplink(1, "wan1", AF_INET, 0x100, kMask, &error), 0) << error;
  ASSERT_EQ(rules.install_general(AF_INET, kMask, &error), 0) << error;
  std::string once = show("-4 rule show");
  ASSERT_EQ(rules.install_uplink(1, "wan1", AF_INET, 0x100, kMask, &error), 0) << error;
  ASSERT_EQ(rules.install_general(AF_INET, kMask, &error), 0) << error;
  EXPECT_EQ(show("-4 rule show"), once);
}

TEST_F(PolicyRulesTest, AnotherDeviceReplacesTheIifRule) {
  PolicyRules rules;
  std::string error;
  ASSERT_EQ(rules.install_uplink(1, "wan1", AF_INET, 0x100, kMask, &error), 0) << error;
  ASSERT_EQ(rules.install_uplink(1, "wan2", AF_INET, 0x100, kMask, &error), 0) << error;
  EXPECT_EQ(show("-4 rule show"),
            "0:\tfrom all lookup local\n"
            "1001:\tfrom all iif wan2 lookup 1\n"
            "3001:\tfrom all fwmark 0x100/0x3f00 unreachable\n"
            "32766:\tfrom all lookup main\n"
            "32767:\tfrom all lookup default\n");
}

TEST_F(PolicyRulesTest, IifRuleOfAMissingDeviceWaitsForIt) {
  PolicyRules rules;
  std::string error;
  ASSERT_EQ(rules.install_uplink(3, "wan3", AF_INET, 0x300, kMask, &error), 0) << error;
  EXPECT_NE(show("-4 rule show").find("1003:\tfrom all iif wan3 [detached] lookup 3\n"), std::string::npos)
      << show("-4 rule show");
  router_ip("link add wan3 type veth peer name wan3p");
  EXPECT_NE(show("-4 rule show").find("1003:\tfrom all iif wan3 lookup 3\n"), std::string::npos)
      << show("-4 rule show");
}

TEST_F(PolicyRulesTest, RemoveUplinkTakesOnlyThatUplinkAndFamily) {
  PolicyRules rules;
  std::string error;
  for (int family : {AF_INET, AF_INET6}) {
    ASSERT_EQ(rules.install_uplink(1, "wan1", family, 0x100, kMask, &error), 0) << error;
    ASSERT_EQ(rules.install_uplink(2, "wan2", family, 0x200, kMask, &error), 0) << error;
    ASSERT_EQ(rules.install_general(family, kMask, &error), 0) << error;
  }
  rules.remove_uplink(1, AF_INET);
  EXPECT_EQ(show("-4 rule show"),
            "0:\tfrom all lookup local\n"
            "1002:\tfrom all iif wan2 lookup 2\n"
            "2061:\tfrom all fwmark 0x3d00/0x3f00 blackhole\n"
            "2062:\tfrom all fwmark 0x3e00/0x3f00 unreachable\n"
            "3002:\tfrom all fwmark 0x200/0x3f00 unreachable\n"
            "32766:\tfrom all lookup main\n"
            "32767:\tfrom all lookup default\n");
  EXPECT_NE(show("-6 rule show").find("1001:\tfrom all iif wan1 lookup 1\n"), std::string::npos);
  rules.remove_general(AF_INET6);
  EXPECT_EQ(show("-6 rule show").find("2061:"), std::string::npos);
  EXPECT_NE(show("-4 rule show").find("2061:"), std::string::npos);
}

TEST_F(PolicyRulesTest, OtherMasksGiveMwan3sGeneralPrefs) {
  PolicyRules rules;
  std::string error;
  ASSERT_EQ(rules.install_general(AF_INET, 0xff00, &error), 0) << error;  // 8 bits: ids 253 and 254
  EXPECT_EQ(show("-4 rule show"),
            "0:\tfrom all lookup local\n"
            "2253:\tfrom all fwmark 0xfd00/0xff00 blackhole\n"
            "2254:\tfrom all fwmark 0xfe00/0xff00 unreachable\n"
            "32766:\tfrom all lookup main\n"
            "32767:\tfrom all lookup default\n");
}

// A reload with another mmx_mask installs the general rules again on the same object: the new ones
// replace the old, and an uplink whose rules did not change keeps them (no delete and re-add).
TEST_F(PolicyRulesTest, ReloadWithAnotherMaskReplacesTheGeneralRulesOnly) {
  PolicyRules rules;
  std::string error;
  ASSERT_EQ(rules.install_general(AF_INET, kMask, &error), 0) << error;
  ASSERT_EQ(rules.install_uplink(1, "wan1", AF_INET, 0x100, kMask, &error), 0) << error;
  ASSERT_EQ(rules.install_uplink(1, "wan1", AF_INET, 0x100, kMask, &error), 0) << error;
  ASSERT_EQ(rules.install_general(AF_INET, 0xff00, &error), 0) << error;
  EXPECT_EQ(show("-4 rule show"),
            "0:\tfrom all lookup local\n"
            "1001:\tfrom all iif wan1 lookup 1\n"
            "2253:\tfrom all fwmark 0xfd00/0xff00 blackhole\n"
            "2254:\tfrom all fwmark 0xfe00/0xff00 unreachable\n"
            "3001:\tfrom all fwmark 0x100/0x3f00 unreachable\n"
            "32766:\tfrom all lookup main\n"
            "32767:\tfrom all lookup default\n");
  rules.remove_uplink(1, AF_INET);
  EXPECT_EQ(show("-4 rule show").find("wan1"), std::string::npos);
}

TEST_F(PolicyRulesTest, LeavesAnIdenticalRuleItDidNotAddInPlace) {
  router_ip("rule add pref 3001 fwmark 0x100/0x3f00 unreachable");
  std::string before = routing_state();
  {
    PolicyRules rules;
    std::string error;
    ASSERT_EQ(rules.install_uplink(1, "wan1", AF_INET, 0x100, kMask, &error), 0) << error;
    EXPECT_EQ(show("-4 rule show").find("3001:"), show("-4 rule show").rfind("3001:")) << "added twice";
  }
  EXPECT_EQ(routing_state(), before);
}

TEST_F(PolicyRulesTest, BadArgumentsFailWithASentence) {
  PolicyRules rules;
  std::string before = routing_state();
  std::string error;
  EXPECT_EQ(rules.install_general(AF_INET, 0x300, &error), -EINVAL);
  EXPECT_NE(error.find("mmx_mask 0x300 has fewer than 3 bits set"), std::string::npos) << error;
  EXPECT_EQ(rules.install_uplink(1, "wan1", AF_INET, 0x100, 0x3e00, &error), -EINVAL);
  EXPECT_NE(error.find("adding IPv4 rule pref 1001 iif wan1 lookup 1 and IPv4 rule pref 3001 fwmark "
                       "0x100/0x3e00 unreachable: mark 0x100 is not a non-zero mark within mask 0x3e00: "
                       "Invalid argument (errno 22)"),
            std::string::npos)
      << error;
  EXPECT_EQ(rules.install_uplink(1, "wan1", AF_INET, 0, kMask, &error), -EINVAL);
  EXPECT_EQ(rules.install_uplink(1, "a-device-name-too-long", AF_INET, 0x100, kMask, &error), -EINVAL);
  EXPECT_NE(error.find("Invalid argument (errno 22)"), std::string::npos) << error;
  EXPECT_EQ(rules.install_uplink(1000, "wan1", AF_INET, 0x100, kMask, &error), -EINVAL);
  EXPECT_EQ(rules.sync_table(254, ifindex("wan1"), AF_INET, {}, &error), -EINVAL);
  EXPECT_NE(error.find("into table 254 (device wan1): a system table"), std::string::npos) << error;
  EXPECT_EQ(routing_state(), before);
}

// ---- table sync -------------------------------------------------------------------------------

TEST_F(PolicyRulesTest, SyncCopiesTheUplinksAndTheLansRoutesButNotTheOtherUplinks) {
  router_ip("route add 203.0.113.0/24 via 192.0.2.1 dev wan1");        // static, via the uplink
  router_ip("route add 192.0.2.128/25 dev wan1 metric 50");            // static on-link
  router_ip("route add 198.51.100.128/25 via 198.51.100.1 dev wan2");  // the other uplink's
  router_ip("route add unreachable 10.99.0.0/16");                     // no device: every table
  router_ip("route add default via 192.0.2.1 dev wan1");               // never copied
  PolicyRules rules;
  int added = 0;
  ASSERT_EQ(sync(rules, 1, "wan1", "wan2", AF_INET, &added), 0);
  EXPECT_EQ(table("-4", 1),
            "10.0.0.0/24 dev lan0 proto kernel scope link src 10.0.0.1\n"
            "unreachable 10.99.0.0/16\n"
            "192.0.2.0/24 dev wan1 proto kernel scope link src 192.0.2.2\n"
            "192.0.2.128/25 dev wan1 scope link metric 50\n"
            "203.0.113.0/24 via 192.0.2.1 dev wan1\n");
  EXPECT_EQ(added, 5);
  ASSERT_EQ(sync(rules, 2, "wan2", "wan1", AF_INET), 0);
  EXPECT_EQ(table("-4", 2),
            "10.0.0.0/24 dev lan0 proto kernel scope link src 10.0.0.1\n"
            "unreachable 10.99.0.0/16\n"
            "198.51.100.0/24 dev wan2 proto kernel scope link src 198.51.100.2\n"
            "198.51.100.128/25 via 198.51.100.1 dev wan2\n");
}

TEST_F(PolicyRulesTest, SyncRemovesACopyWhenTheMainRouteGoes) {
  router_ip("route add 203.0.113.0/24 via 192.0.2.1 dev wan1");
  PolicyRules rules;
  ASSERT_EQ(sync(rules, 1, "wan1", "wan2", AF_INET), 0);
  ASSERT_NE(table("-4", 1).find("203.0.113.0/24 via 192.0.2.1 dev wan1"), std::string::npos);
  router_ip("route del 203.0.113.0/24 via 192.0.2.1 dev wan1");
  int added = -1;
  int removed = -1;
  ASSERT_EQ(sync(rules, 1, "wan1", "wan2", AF_INET, &added, &removed), 0);
  EXPECT_EQ(added, 0);
  EXPECT_EQ(removed, 1);
  EXPECT_EQ(table("-4", 1),
            "10.0.0.0/24 dev lan0 proto kernel scope link src 10.0.0.1\n"
            "192.0.2.0/24 dev wan1 proto kernel scope link src 192.0.2.2\n");
  // The connected route goes with its address, and so does the copy (the kernel drops every route whose
  // source is a deleted address, in all tables): sync only forgets it.
  router_ip("addr del 192.0.2.2/24 dev wan1");
  ASSERT_EQ(sync(rules, 1, "wan1", "wan2", AF_INET, &added, &removed), 0);
  EXPECT_EQ(added, 0);
  EXPECT_EQ(table("-4", 1), "10.0.0.0/24 dev lan0 proto kernel scope link src 10.0.0.1\n");
}

TEST_F(PolicyRulesTest, SyncFollowsAChangedRoute) {
  router_ip("route add 203.0.113.0/24 via 192.0.2.1 dev wan1");
  PolicyRules rules;
  ASSERT_EQ(sync(rules, 1, "wan1", "wan2", AF_INET), 0);
  router_ip("route replace 203.0.113.0/24 via 192.0.2.9 dev wan1");
  int added = 0;
  int removed = 0;
  ASSERT_EQ(sync(rules, 1, "wan1", "wan2", AF_INET, &added, &removed), 0);
  EXPECT_EQ(added, 1);
  EXPECT_EQ(removed, 1);
  EXPECT_NE(table("-4", 1).find("203.0.113.0/24 via 192.0.2.9 dev wan1\n"), std::string::npos)
      << table("-4", 1);
  EXPECT_EQ(table("-4", 1).find("192.0.2.1 "), std::string::npos) << table("-4", 1);
}

TEST_F(PolicyRulesTest, SyncWithNothingChangedTouchesNothing) {
  router_ip("route add 203.0.113.0/24 via 192.0.2.1 dev wan1 mtu lock 1400");
  router_ip("-6 route add 2001:db8:ff::/48 via 2001:db8:1::1 dev wan1");
  PolicyRules rules;
  for (int family : {AF_INET, AF_INET6}) {
    ASSERT_EQ(sync(rules, 1, "wan1", "wan2", family), 0);
    int added = -1;
    int removed = -1;
    ASSERT_EQ(sync(rules, 1, "wan1", "wan2", family, &added, &removed), 0);
    EXPECT_EQ(added, 0) << family;
    EXPECT_EQ(removed, 0) << family;
  }
  EXPECT_NE(table("-4", 1).find("203.0.113.0/24 via 192.0.2.1 dev wan1 mtu lock 1400\n"), std::string::npos)
      << table("-4", 1);
}

TEST_F(PolicyRulesTest, SyncCopiesIpv6RoutesButNotTheLansLinkLocalNet) {
  router_ip("-6 route add 2001:db8:ff::/48 via 2001:db8:1::1 dev wan1");
  PolicyRules rules;
  ASSERT_EQ(sync(rules, 1, "wan1", "wan2", AF_INET6), 0);
  EXPECT_EQ(table("-6", 1),
            "2001:db8:1::/64 dev wan1 proto kernel metric 256 pref medium\n"
            "2001:db8:a::/64 dev lan0 proto kernel metric 256 pref medium\n"
            "2001:db8:ff::/48 via 2001:db8:1::1 dev wan1 metric 1024 pref medium\n"
            "fe80::/64 dev wan1 proto kernel metric 256 pref medium\n");
  EXPECT_TRUE(table("-4", 1).empty()) << table("-4", 1);
}

TEST_F(PolicyRulesTest, SyncLeavesRoutesItDidNotAdd) {
  router_ip("route add 198.18.0.0/15 dev wan1 table 1");  // a person's own route
  router_ip("route add 10.0.0.0/24 dev lan0 table 1 proto kernel scope link src 10.0.0.1");  // = a copy
  std::string before = routing_state();
  {
    PolicyRules rules;
    int added = 0;
    ASSERT_EQ(sync(rules, 1, "wan1", "wan2", AF_INET, &added), 0);
    EXPECT_EQ(added, 1);  // only 192.0.2.0/24
    EXPECT_NE(table("-4", 1).find("198.18.0.0/15 dev wan1 scope link\n"), std::string::npos);
  }
  EXPECT_EQ(routing_state(), before);
}

TEST_F(PolicyRulesTest, ABlockingRouteIsReportedAndTheRestCopied) {
  router_ip("route add 203.0.113.0/24 via 192.0.2.1 dev wan1");
  router_ip("route add 203.0.113.0/24 via 192.0.2.7 dev wan1 table 1");  // same destination and metric
  PolicyRules rules;
  std::string error;
  int added = 0;
  EXPECT_EQ(rules.sync_table(1, ifindex("wan1"), AF_INET, {ifindex("wan2")}, &error, &added), -EEXIST);
  EXPECT_NE(
      error.find("copying IPv4 route 203.0.113.0/24 via 192.0.2.1 dev wan1 metric 0 from table main to "
                 "table 1: table 1 holds another route to 203.0.113.0/24 with that metric, which uplinkd "
                 "did not add: File exists (errno 17)"),
      std::string::npos)
      << error;
  EXPECT_EQ(added, 2);  // lan0's and wan1's connected routes
}

TEST_F(PolicyRulesTest, RemoveTableTakesOnlyItsCopies) {
  PolicyRules rules;
  ASSERT_EQ(sync(rules, 1, "wan1", "wan2", AF_INET), 0);
  ASSERT_EQ(sync(rules, 1, "wan1", "wan2", AF_INET6), 0);
  ASSERT_EQ(sync(rules, 2, "wan2", "wan1", AF_INET), 0);
  rules.remove_table(1, AF_INET);
  EXPECT_TRUE(table("-4", 1).empty()) << table("-4", 1);
  EXPECT_FALSE(table("-6", 1).empty());
  EXPECT_FALSE(table("-4", 2).empty());
}

TEST_F(PolicyRulesTest, RemoveAllAfterTheDeviceVanishedIsQuiet) {
  PolicyRules rules;
  std::string error;
  const int wan2 = ifindex("wan2");
  ASSERT_EQ(rules.install_uplink(2, "wan2", AF_INET, 0x200, kMask, &error), 0) << error;
  ASSERT_EQ(sync(rules, 2, "wan2", "wan1", AF_INET), 0);
  router_ip("link del wan2");  // takes its routes, and their copies, with it
  int removed = -1;
  ASSERT_EQ(rules.sync_table(2, wan2, AF_INET, {ifindex("wan1")}, &error, nullptr, &removed), 0) << error;
  EXPECT_EQ(removed, 0);
  EXPECT_EQ(table("-4", 2), "10.0.0.0/24 dev lan0 proto kernel scope link src 10.0.0.1\n");
  rules.remove_all();
  EXPECT_EQ(show("-4 rule show"),
            "0:\tfrom all lookup local\n32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n");
  EXPECT_TRUE(table("-4", 2).empty()) << table("-4", 2);
}

// ---- connected networks -----------------------------------------------------------------------

TEST_F(PolicyRulesTest, ConnectedNetworksAreTheMainAndLocalDestinations) {
  router_ip("route add 203.0.113.0/24 via 192.0.2.1 dev wan1");
  router_ip("route add default via 192.0.2.1 dev wan1");
  std::vector<RoutePrefix> v4;
  std::string error;
  ASSERT_EQ(connected_networks(AF_INET, &v4, &error), 0) << error;
  std::set<std::string> expected = ip_destinations("-4");
  expected.insert("224.0.0.0/3");
  EXPECT_EQ(strings(v4), expected);
  EXPECT_TRUE(std::is_sorted(v4.begin(), v4.end()));
  for (const char* p : {"192.0.2.0/24", "192.0.2.2/32", "198.51.100.0/24", "10.0.0.0/24", "203.0.113.0/24",
                        "127.0.0.0/8", "224.0.0.0/3"}) {
    EXPECT_EQ(expected.count(p), 1U) << p;
  }
  EXPECT_EQ(strings(v4).count("0.0.0.0/0"), 0U);

  router_ip("-6 route add 2001:db8:ff::/48 via 2001:db8:1::1 dev wan1");
  router_ip("-6 route add default via 2001:db8:1::1 dev wan1");
  std::vector<RoutePrefix> v6;
  ASSERT_EQ(connected_networks(AF_INET6, &v6, &error), 0) << error;
  EXPECT_EQ(strings(v6), ip_destinations("-6"));
  for (const char* p :
       {"2001:db8:1::/64", "2001:db8:1::2/128", "2001:db8:ff::/48", "fe80::/64", "ff00::/8", "::1/128"}) {
    EXPECT_EQ(strings(v6).count(p), 1U) << p;
  }
  EXPECT_EQ(strings(v6).count("::/0"), 0U);
}

TEST_F(PolicyRulesTest, ConnectedNetworksFollowRouteChanges) {
  std::vector<RoutePrefix> before;
  std::string error;
  ASSERT_EQ(connected_networks(AF_INET, &before, &error), 0) << error;
  router_ip("route add 203.0.113.0/24 via 192.0.2.1 dev wan1");
  std::vector<RoutePrefix> after;
  ASSERT_EQ(connected_networks(AF_INET, &after, &error), 0) << error;
  EXPECT_EQ(strings(before).count("203.0.113.0/24"), 0U);
  EXPECT_EQ(strings(after).count("203.0.113.0/24"), 1U);
  EXPECT_EQ(after.size(), before.size() + 1);
}

// ---- source rules of the router's own addresses ------------------------------------------------

// The lines of `ip rule show` at the source rules' prefs (1501 to 1999).
std::string source_rule_lines(const std::string& rules) {
  std::istringstream lines(rules);
  std::string line;
  std::string out;
  while (std::getline(lines, line)) {
    const int pref = std::atoi(line.c_str());
    if (pref > static_cast<int>(kSourceRulePrefBase) && pref < static_cast<int>(kFwmarkRulePrefBase)) {
      out += line + "\n";
    }
  }
  return out;
}

TEST_F(PolicyRulesTest, SourceRulesFollowTheUplinksIpv4Addresses) {
  PolicyRules rules;
  std::string error;
  std::vector<IpAddress> addresses;
  ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_INET, &error, &addresses), 0) << error;
  ASSERT_EQ(addresses.size(), 1U);
  EXPECT_EQ(addresses[0].str(), "198.51.100.2");
  EXPECT_EQ(source_rule_lines(show("-4 rule show")), "1502:\tfrom 198.51.100.2 lookup 2\n");

  // A renew that hands out another address: the new one comes, then the old one goes. (Another subnet:
  // deleting a primary address takes the secondaries of its subnet with it.)
  router_ip("addr add 10.99.0.2/24 dev wan2");
  ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_INET, &error), 0) << error;
  EXPECT_EQ(source_rule_lines(show("-4 rule show")),
            "1502:\tfrom 198.51.100.2 lookup 2\n1502:\tfrom 10.99.0.2 lookup 2\n");

  router_ip("addr del 198.51.100.2/24 dev wan2");
  ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_INET, &error), 0) << error;
  EXPECT_EQ(source_rule_lines(show("-4 rule show")), "1502:\tfrom 10.99.0.2 lookup 2\n");

  // Nothing changed: nothing touched.
  const std::string once = show("-4 rule show");
  ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_INET, &error), 0) << error;
  EXPECT_EQ(show("-4 rule show"), once);

  rules.remove_source_rules(2, AF_INET);
  EXPECT_EQ(source_rule_lines(show("-4 rule show")), "");
}

TEST_F(PolicyRulesTest, SourceRulesTakeIpv6GlobalAddressesButNotLinkLocal) {
  PolicyRules rules;
  std::string error;
  ASSERT_NE(show("-6 addr show dev wan2").find("fe80::"), std::string::npos);
  ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_INET6, &error), 0) << error;
  EXPECT_EQ(source_rule_lines(show("-6 rule show")), "1502:\tfrom 2001:db8:2::2 lookup 2\n");
  EXPECT_EQ(source_rule_lines(show("-4 rule show")), "");  // the other family is not touched

  router_ip("-6 addr add 2001:db8:2::5/64 dev wan2 nodad");
  router_ip("-6 addr del 2001:db8:2::2/64 dev wan2");
  ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_INET6, &error), 0) << error;
  EXPECT_EQ(source_rule_lines(show("-6 rule show")), "1502:\tfrom 2001:db8:2::5 lookup 2\n");
}

TEST_F(PolicyRulesTest, SourceRulesOfTwoUplinksAndTheirRemoval) {
  PolicyRules rules;
  std::string error;
  for (int family : {AF_INET, AF_INET6}) {
    ASSERT_EQ(rules.install_uplink(1, "wan1", family, 0x100, kMask, &error), 0) << error;
    ASSERT_EQ(rules.install_uplink(2, "wan2", family, 0x200, kMask, &error), 0) << error;
    ASSERT_EQ(rules.sync_source_rules(1, ifindex("wan1"), family, &error), 0) << error;
    ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), family, &error), 0) << error;
  }
  EXPECT_EQ(source_rule_lines(show("-4 rule show")),
            "1501:\tfrom 192.0.2.2 lookup 1\n"
            "1502:\tfrom 198.51.100.2 lookup 2\n");
  // A reload that removes uplink 1 takes its source rules with its other rules, that family only.
  rules.remove_uplink(1, AF_INET);
  EXPECT_EQ(source_rule_lines(show("-4 rule show")), "1502:\tfrom 198.51.100.2 lookup 2\n");
  EXPECT_NE(show("-6 rule show").find("1501:\tfrom 2001:db8:1::2 lookup 1\n"), std::string::npos)
      << show("-6 rule show");
  // The iif and unreachable rules stay when only the source rules go (device down).
  rules.remove_source_rules(2, AF_INET);
  EXPECT_EQ(source_rule_lines(show("-4 rule show")), "");
  EXPECT_NE(show("-4 rule show").find("1002:\tfrom all iif wan2 lookup 2\n"), std::string::npos);
}

TEST_F(PolicyRulesTest, SourceRuleThatWasAlreadyThereIsLeftInPlace) {
  router_ip("rule add pref 1502 from 198.51.100.2 lookup 2");
  {
    PolicyRules rules;
    std::string error;
    ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_INET, &error), 0) << error;
    EXPECT_EQ(source_rule_lines(show("-4 rule show")), "1502:\tfrom 198.51.100.2 lookup 2\n");
  }
  EXPECT_EQ(source_rule_lines(show("-4 rule show")), "1502:\tfrom 198.51.100.2 lookup 2\n");
  router_ip("rule del pref 1502 from 198.51.100.2 lookup 2");
}

// An upgrade from an uplinkd that ran without the output table: its unconditional source rule at
// uplinkd's pref is replaced by the fwmark form (the new one first), and only that rule goes: another
// address's rule, or one at another pref, stays.
TEST_F(PolicyRulesTest, UnconditionalSourceRuleOfAnEarlierDaemonGivesWayToTheFwmarkForm) {
  router_ip("rule add pref 1502 from 198.51.100.2 lookup 2");
  router_ip("rule add pref 1502 from 198.51.100.9 lookup 2");
  router_ip("rule add pref 1600 from 198.51.100.2 lookup 2");
  PolicyRules rules;
  std::string error;
  // What the daemon does on the same socket first (rules, a table copy: dumps and requests).
  ASSERT_EQ(rules.install_general(AF_INET, kMask, &error), 0) << error;
  ASSERT_EQ(rules.install_uplink(2, "wan2", AF_INET, 0x200, kMask, &error), 0) << error;
  ASSERT_EQ(rules.sync_table(2, ifindex("wan2"), AF_INET, {ifindex("wan1")}, &error), 0) << error;
  ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_INET, &error, nullptr, kMask), 0) << error;
  EXPECT_EQ(source_rule_lines(show("-4 rule show")),
            "1502:\tfrom 198.51.100.9 lookup 2\n"  // added before the fwmark form, so listed first
            "1502:\tfrom 198.51.100.2 fwmark 0/0x3f00 lookup 2\n"
            "1600:\tfrom 198.51.100.2 lookup 2\n");
  // Put back by hand after it was retired: left alone (it was looked for once).
  router_ip("rule add pref 1502 from 198.51.100.2 lookup 2");
  ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_INET, &error, nullptr, kMask), 0) << error;
  EXPECT_NE(source_rule_lines(show("-4 rule show")).find("1502:\tfrom 198.51.100.2 lookup 2\n"),
            std::string::npos);
  router_ip("rule del pref 1502 from 198.51.100.2 lookup 2");
  router_ip("rule del pref 1502 from 198.51.100.9 lookup 2");
  router_ip("rule del pref 1600 from 198.51.100.2 lookup 2");
}

// Without an earlier daemon's rule nothing is deleted: a delete request without a fwmark would match
// the fwmark form too (the kernel treats an absent fwmark as any), so it is sent only for a rule found.
TEST_F(PolicyRulesTest, FwmarkSourceRuleStaysWhenNoEarlierRuleWasThere) {
  PolicyRules rules;
  std::string error;
  for (int round = 0; round < 2; ++round) {
    ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_INET, &error, nullptr, kMask), 0) << error;
    EXPECT_EQ(source_rule_lines(show("-4 rule show")), "1502:\tfrom 198.51.100.2 fwmark 0/0x3f00 lookup 2\n")
        << "round " << round;
  }
}

TEST_F(PolicyRulesTest, SourceRulesRefuseBadArgumentsWithASentence) {
  PolicyRules rules;
  std::string error;
  EXPECT_EQ(rules.sync_source_rules(500, ifindex("wan2"), AF_INET, &error), -EINVAL);
  EXPECT_NE(error.find("1 to 499"), std::string::npos) << error;
  EXPECT_EQ(rules.sync_source_rules(2, 0, AF_INET, &error), -ENODEV);
  EXPECT_NE(error.find("uplink 2"), std::string::npos) << error;
  EXPECT_EQ(rules.sync_source_rules(2, ifindex("wan2"), AF_PACKET, &error), -EAFNOSUPPORT);
  EXPECT_EQ(source_rule_lines(show("-4 rule show")), "");
}

// ---- removal restores the state exactly -------------------------------------------------------

TEST_F(PolicyRulesTest, RemoveAllRestoresRulesAndTablesExactly) {
  router_ip("route add 203.0.113.0/24 via 192.0.2.1 dev wan1");
  router_ip("-6 route add 2001:db8:ff::/48 via 2001:db8:1::1 dev wan1");
  std::string before = routing_state();
  PolicyRules rules;
  std::string error;
  for (int family : {AF_INET, AF_INET6}) {
    ASSERT_EQ(rules.install_uplink(1, "wan1", family, 0x100, kMask, &error), 0) << error;
    ASSERT_EQ(rules.install_uplink(2, "wan2", family, 0x200, kMask, &error), 0) << error;
    ASSERT_EQ(rules.install_general(family, kMask, &error), 0) << error;
    ASSERT_EQ(sync(rules, 1, "wan1", "wan2", family), 0);
    ASSERT_EQ(sync(rules, 2, "wan2", "wan1", family), 0);
    ASSERT_EQ(rules.sync_source_rules(1, ifindex("wan1"), family, &error), 0) << error;
    ASSERT_EQ(rules.sync_source_rules(2, ifindex("wan2"), family, &error), 0) << error;
  }
  ASSERT_NE(routing_state(), before);
  rules.remove_all();
  EXPECT_EQ(routing_state(), before);
}

TEST_F(PolicyRulesTest, DestructorRemovesWhatWasInstalled) {
  std::string before = routing_state();
  {
    PolicyRules rules;
    std::string error;
    for (int family : {AF_INET, AF_INET6}) {
      ASSERT_EQ(rules.install_uplink(1, "wan1", family, 0x100, kMask, &error), 0) << error;
      ASSERT_EQ(rules.install_general(family, kMask, &error), 0) << error;
      ASSERT_EQ(sync(rules, 1, "wan1", "wan2", family), 0);
      ASSERT_EQ(rules.sync_source_rules(1, ifindex("wan1"), family, &error), 0) << error;
    }
  }
  EXPECT_EQ(routing_state(), before);
}

}  // namespace
}  // namespace uplinkd::netlink
