// LocalDefaultRoute against a real kernel, inside the router namespace of the netns lab, with `ip` as
// the witness: a plain route for one member, a weighted multipath route for several, replaced in place,
// removed when no member is left and at destruction, and never taking over a default route at its
// metric that it did not add. The router gets a second uplink wan2 (a veth into the isp namespace).
#include "netlink/default_route.h"

#include <net/if.h>
#include <sys/socket.h>

#include <cerrno>

#include "netns_fixture.h"

namespace uplinkd::netlink {
namespace {

using uplinkd::testing::NetnsTest;
using uplinkd::testing::normalize_lines;
using Hop = LocalDefaultRoute::Hop;

class DefaultRouteTest : public NetnsTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(NetnsTest::SetUp());
    router_ip("link add wan2 type veth peer name wan2p netns " + isp_ns_);
    router_ip("addr add 198.51.100.2/24 dev wan2");
    router_ip("addr add 2001:db8:2::2/64 dev wan2 nodad");
    router_ip("link set wan2 up");
    isp_ip("link set wan2p up");
    ASSERT_TRUE(uplinkd::testing::wait_until([&] {
      return show("-6 route show table main").find("2001:db8:2::/64 dev wan2") != std::string::npos;
    }));
    // The system's own default routes, as netifd would install them.
    router_ip("route add default via 192.0.2.1 dev wan1 metric 10");
    router_ip("route add default via 198.51.100.1 dev wan2 metric 20");
  }

  std::string show(const std::string& args) { return normalize_lines(router_ip(args)); }
  static int ifindex(const char* device) { return static_cast<int>(if_nametoindex(device)); }
  static Hop hop(const char* device, const char* gateway, int weight = 1) {
    return Hop{ifindex(device), IpAddress::parse(gateway), weight};
  }
};

TEST_F(DefaultRouteTest, OneMemberGivesAPlainRouteBelowTheSystemsMetrics) {
  LocalDefaultRoute route;
  std::string error;
  ASSERT_EQ(route.set(AF_INET, 1, {hop("wan1", "192.0.2.1")}, &error), 0) << error;
  EXPECT_EQ(show("-4 route show default"),
            "default via 192.0.2.1 dev wan1 proto static metric 1\n"
            "default via 192.0.2.1 dev wan1 metric 10\n"
            "default via 198.51.100.1 dev wan2 metric 20\n");
  EXPECT_NE(show("-4 route get 203.0.113.1").find("dev wan1"), std::string::npos);
}

TEST_F(DefaultRouteTest, SeveralMembersGiveAWeightedMultipathRouteReplacedInPlace) {
  LocalDefaultRoute route;
  std::string error;
  ASSERT_EQ(route.set(AF_INET, 1, {hop("wan1", "192.0.2.1", 3), hop("wan2", "198.51.100.1", 2)}, &error), 0)
      << error;
  EXPECT_EQ(show("-4 route show default metric 1"),
            "default proto static\n"
            "\tnexthop via 192.0.2.1 dev wan1 weight 3\n"
            "\tnexthop via 198.51.100.1 dev wan2 weight 2\n");
  ASSERT_EQ(route.set(AF_INET, 1, {hop("wan2", "198.51.100.1")}, &error), 0) << error;
  EXPECT_EQ(show("-4 route show default metric 1"), "default via 198.51.100.1 dev wan2 proto static\n");
  // The same hops again: nothing to do.
  EXPECT_EQ(route.set(AF_INET, 1, {hop("wan2", "198.51.100.1")}, &error), 0);
  EXPECT_EQ(route.hops(AF_INET).size(), 1U);
}

TEST_F(DefaultRouteTest, Ipv6FollowsTheMembersToo) {
  LocalDefaultRoute route;
  std::string error;
  ASSERT_EQ(
      route.set(AF_INET6, 1, {hop("wan1", "2001:db8:1::1", 1), hop("wan2", "2001:db8:2::1", 1)}, &error), 0)
      << error;
  std::string shown = show("-6 route show default metric 1");
  EXPECT_NE(shown.find("nexthop via 2001:db8:1::1 dev wan1"), std::string::npos) << shown;
  EXPECT_NE(shown.find("nexthop via 2001:db8:2::1 dev wan2"), std::string::npos) << shown;
  ASSERT_EQ(route.set(AF_INET6, 1, {hop("wan1", "2001:db8:1::1")}, &error), 0) << error;
  shown = show("-6 route show default metric 1");
  EXPECT_NE(shown.find("default via 2001:db8:1::1 dev wan1 proto static"), std::string::npos) << shown;
  EXPECT_EQ(shown.find("wan2"), std::string::npos) << shown;
}

TEST_F(DefaultRouteTest, NoMemberLeftAndDestructionRemoveExactlyItsRoute) {
  const std::string before = show("-4 route show table main") + show("-6 route show table main");
  {
    LocalDefaultRoute route;
    std::string error;
    ASSERT_EQ(route.set(AF_INET, 1, {hop("wan1", "192.0.2.1")}, &error), 0) << error;
    ASSERT_EQ(route.set(AF_INET, 1, {}, &error), 0);
    EXPECT_EQ(show("-4 route show default metric 1"), "");
    ASSERT_EQ(route.set(AF_INET, 1, {hop("wan2", "198.51.100.1")}, &error), 0) << error;
    ASSERT_EQ(route.set(AF_INET6, 1, {hop("wan2", "2001:db8:2::1")}, &error), 0) << error;
  }
  EXPECT_EQ(show("-4 route show table main") + show("-6 route show table main"), before);
}

TEST_F(DefaultRouteTest, NeverTakesOverADefaultRouteItDidNotAdd) {
  router_ip("route add default via 198.51.100.1 dev wan2 metric 1");
  LocalDefaultRoute route;
  std::string error;
  EXPECT_EQ(route.set(AF_INET, 1, {hop("wan1", "192.0.2.1")}, &error), -EEXIST);
  EXPECT_NE(error.find("local_route_metric"), std::string::npos) << error;
  EXPECT_EQ(show("-4 route show default metric 1"), "default via 198.51.100.1 dev wan2\n");
  EXPECT_TRUE(route.hops(AF_INET).empty());
}

}  // namespace
}  // namespace uplinkd::netlink
