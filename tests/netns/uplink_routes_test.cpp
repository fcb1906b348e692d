// UplinkRoutes and find_default_gateway against a real kernel, inside the router namespace of
// the netns lab; `ip` (run in the same namespace) is the independent witness.
#include "netlink/uplink_routes.h"

#include <net/if.h>
#include <sys/socket.h>

#include <cerrno>

#include "netns_fixture.h"

namespace uplinkd::netlink {
namespace {

using uplinkd::testing::NetnsTest;
using uplinkd::testing::normalize_lines;

constexpr uint32_t kTable = 1;
constexpr uint32_t kMark = 0x100;
constexpr uint32_t kMask = 0x3f00;
constexpr uint32_t kPref = 2001;

constexpr const char* kDefaultRules =
    "0:\tfrom all lookup local\n"
    "32766:\tfrom all lookup main\n"
    "32767:\tfrom all lookup default\n";
constexpr const char* kDefaultRulesV6 =
    "0:\tfrom all lookup local\n"
    "32766:\tfrom all lookup main\n";
constexpr const char* kUplinkRule = "2001:\tfrom all fwmark 0x100/0x3f00 lookup 1\n";

IpAddress address(const char* text) { return *IpAddress::parse(text); }

class UplinkRoutesTest : public NetnsTest {
 protected:
  int uplink_ifindex() { return static_cast<int>(if_nametoindex(kUplink)); }  // the thread is in the router

  std::string show(const std::string& args) { return normalize_lines(router_ip(args)); }

  // A table that never held a route does not exist at all, and `ip` says so.
  bool table_empty(const char* family_flag, uint32_t table) {
    auto result = uplinkd::testing::run_command("ip -n " + router_ns_ + " " + family_flag +
                                                " route show table " + std::to_string(table));
    return result.output.empty() || result.output.find("FIB table does not exist") != std::string::npos;
  }

  // Everything install() could touch, in one string to compare before and after.
  std::string routing_state() {
    return show("-4 rule show") + show("-6 rule show") + show("-4 route show table all") +
           show("-6 route show table all");
  }

  int install_v4(UplinkRoutes& routes, const char* gateway = kIspV4) {
    std::string error;
    int err =
        routes.install(kTable, uplink_ifindex(), AF_INET, address(gateway), kMark, kMask, kPref, &error);
    EXPECT_EQ(err, 0) << error;
    return err;
  }

  int install_v6(UplinkRoutes& routes) {
    std::string error;
    int err =
        routes.install(kTable, uplink_ifindex(), AF_INET6, address(kIspV6), kMark, kMask, kPref, &error);
    EXPECT_EQ(err, 0) << error;
    return err;
  }
};

TEST_F(UplinkRoutesTest, InstallsV4DefaultRouteAndFwmarkRule) {
  UplinkRoutes routes;
  ASSERT_EQ(install_v4(routes), 0);
  EXPECT_EQ(show("-4 route show table 1"), "default via 192.0.2.1 dev wan1 proto static\n");
  EXPECT_EQ(show("-4 rule show"), std::string("0:\tfrom all lookup local\n") + kUplinkRule +
                                      "32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n");
  EXPECT_TRUE(table_empty("-6", kTable));
  EXPECT_EQ(show("-6 rule show"), kDefaultRulesV6);
}

TEST_F(UplinkRoutesTest, InstallsV6DefaultRouteAndFwmarkRule) {
  UplinkRoutes routes;
  ASSERT_EQ(install_v6(routes), 0);
  EXPECT_EQ(show("-6 route show table 1"),
            "default via 2001:db8:1::1 dev wan1 proto static metric 1024 pref medium\n");
  EXPECT_EQ(show("-6 rule show"),
            std::string("0:\tfrom all lookup local\n") + kUplinkRule + "32766:\tfrom all lookup main\n");
  EXPECT_TRUE(table_empty("-4", kTable));
  EXPECT_EQ(show("-4 rule show"), kDefaultRules);
}

TEST_F(UplinkRoutesTest, WithoutGatewayInstallsLinkScopeRoute) {
  UplinkRoutes routes;
  std::string error;
  ASSERT_EQ(routes.install(kTable, uplink_ifindex(), AF_INET, std::nullopt, kMark, kMask, kPref, &error), 0)
      << error;
  EXPECT_EQ(show("-4 route show table 1"), "default dev wan1 proto static scope link\n");
}

TEST_F(UplinkRoutesTest, ReinstallReplacesTheGatewayAndKeepsOneRule) {
  std::string before = routing_state();
  UplinkRoutes routes;
  ASSERT_EQ(install_v4(routes), 0);
  ASSERT_EQ(install_v4(routes, "192.0.2.3"), 0);
  EXPECT_EQ(show("-4 route show table 1"), "default via 192.0.2.3 dev wan1 proto static\n");
  EXPECT_EQ(show("-4 rule show"), std::string("0:\tfrom all lookup local\n") + kUplinkRule +
                                      "32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n");
  routes.remove_all();
  EXPECT_EQ(routing_state(), before);
}

TEST_F(UplinkRoutesTest, ChangedMarkReplacesTheOldRule) {
  UplinkRoutes routes;
  ASSERT_EQ(install_v4(routes), 0);
  std::string error;
  ASSERT_EQ(routes.install(kTable, uplink_ifindex(), AF_INET, address(kIspV4), 0x200, kMask, 2002, &error), 0)
      << error;
  EXPECT_EQ(show("-4 rule show"), std::string("0:\tfrom all lookup local\n") +
                                      "2002:\tfrom all fwmark 0x200/0x3f00 lookup 1\n"
                                      "32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n");
}

TEST_F(UplinkRoutesTest, RemoveAllRestoresRulesAndRoutesExactly) {
  // Someone else's route in the same table must survive.
  router_ip("route add 198.51.100.0/24 via 192.0.2.1 dev wan1 table 1");
  std::string before = routing_state();
  UplinkRoutes routes;
  ASSERT_EQ(install_v4(routes), 0);
  ASSERT_EQ(install_v6(routes), 0);
  std::string error;
  ASSERT_EQ(routes.install(2, uplink_ifindex(), AF_INET, address(kIspV4), 0x200, kMask, 2002, &error), 0)
      << error;
  ASSERT_NE(routing_state(), before);
  routes.remove_all();
  EXPECT_EQ(routing_state(), before);
}

TEST_F(UplinkRoutesTest, DestructorRemovesWhatWasInstalled) {
  std::string before = routing_state();
  {
    UplinkRoutes routes;
    ASSERT_EQ(install_v4(routes), 0);
    ASSERT_EQ(install_v6(routes), 0);
  }
  EXPECT_EQ(routing_state(), before);
}

TEST_F(UplinkRoutesTest, RemoveTakesOnlyThatTableAndFamily) {
  UplinkRoutes routes;
  ASSERT_EQ(install_v4(routes), 0);
  ASSERT_EQ(install_v6(routes), 0);
  routes.remove(kTable, AF_INET);
  EXPECT_TRUE(table_empty("-4", kTable));
  EXPECT_EQ(show("-4 rule show"), kDefaultRules);
  EXPECT_EQ(show("-6 route show table 1"),
            "default via 2001:db8:1::1 dev wan1 proto static metric 1024 pref medium\n");
  EXPECT_EQ(show("-6 rule show"),
            std::string("0:\tfrom all lookup local\n") + kUplinkRule + "32766:\tfrom all lookup main\n");
}

TEST_F(UplinkRoutesTest, LeavesAnIdenticalRuleItDidNotAddInPlace) {
  router_ip("rule add fwmark 0x100/0x3f00 lookup 1 pref 2001");
  std::string before = routing_state();
  UplinkRoutes routes;
  ASSERT_EQ(install_v4(routes), 0);  // EEXIST on the rule is fine
  EXPECT_EQ(show("-4 rule show"), std::string("0:\tfrom all lookup local\n") + kUplinkRule +
                                      "32766:\tfrom all lookup main\n32767:\tfrom all lookup default\n");
  routes.remove_all();
  EXPECT_EQ(routing_state(), before);
}

TEST_F(UplinkRoutesTest, RemoveAfterTheDeviceVanishedIsQuiet) {
  UplinkRoutes routes;
  ASSERT_EQ(install_v4(routes), 0);
  router_ip("link del wan1");  // takes the route with it; the rule stays until removal
  routes.remove_all();
  EXPECT_EQ(show("-4 rule show"), kDefaultRules);
}

TEST_F(UplinkRoutesTest, MissingIfindexFailsWithDeviceTableAndErrno) {
  std::string before = routing_state();
  UplinkRoutes routes;
  std::string error;
  int err = routes.install(kTable, 9999, AF_INET, address(kIspV4), kMark, kMask, kPref, &error);
  EXPECT_EQ(err, -ENODEV);
  EXPECT_NE(error.find("via 192.0.2.1"), std::string::npos) << error;
  EXPECT_NE(error.find("ifindex 9999"), std::string::npos) << error;
  EXPECT_NE(error.find("table 1"), std::string::npos) << error;
  EXPECT_NE(error.find("No such device (errno 19)"), std::string::npos) << error;
  EXPECT_EQ(routing_state(), before);
}

TEST_F(UplinkRoutesTest, GatewayOfTheOtherFamilyIsRejected) {
  UplinkRoutes routes;
  std::string error;
  EXPECT_EQ(routes.install(kTable, uplink_ifindex(), AF_INET6, address(kIspV4), kMark, kMask, kPref, &error),
            -EINVAL);
  EXPECT_FALSE(error.empty());
}

TEST_F(UplinkRoutesTest, FindsTheMainTableDefaultGateway) {
  EXPECT_EQ(find_default_gateway(uplink_ifindex(), AF_INET), std::nullopt);
  EXPECT_EQ(find_default_gateway(uplink_ifindex(), AF_INET6), std::nullopt);
  router_ip("route add default via 192.0.2.1 dev wan1");
  router_ip("-6 route add default via 2001:db8:1::1 dev wan1");
  EXPECT_EQ(find_default_gateway(uplink_ifindex(), AF_INET), address(kIspV4));
  EXPECT_EQ(find_default_gateway(uplink_ifindex(), AF_INET6), address(kIspV6));
  EXPECT_EQ(find_default_gateway(static_cast<int>(if_nametoindex("lo")), AF_INET), std::nullopt);
}

TEST_F(UplinkRoutesTest, PrefersTheLowestMetricDefaultRoute) {
  router_ip("route add default via 192.0.2.9 dev wan1 metric 200");
  router_ip("route add default via 192.0.2.1 dev wan1 metric 100");
  EXPECT_EQ(find_default_gateway(uplink_ifindex(), AF_INET), address(kIspV4));
}

TEST_F(UplinkRoutesTest, DefaultGatewayIgnoresOtherTablesAndLinkRoutes) {
  UplinkRoutes routes;
  ASSERT_EQ(install_v4(routes), 0);  // table 1, not main
  EXPECT_EQ(find_default_gateway(uplink_ifindex(), AF_INET), std::nullopt);
  router_ip("route add default dev wan1");  // main, but no gateway
  EXPECT_EQ(find_default_gateway(uplink_ifindex(), AF_INET), std::nullopt);
}

}  // namespace
}  // namespace uplinkd::netlink
