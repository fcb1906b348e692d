// RouteEvents against a real kernel, inside the router namespace of the netns lab, and the resync an
// overrun calls for: UplinkRoutes::resync (table N's default route and fwmark rule) and
// PolicyRules::sync_table (table N's copies of the main table's routes), which the daemon's policy
// refresh runs. `ip` (run in the same namespace) is the independent witness.
#include "netlink/route_events.h"

#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "netlink/policy_rules.h"
#include "netlink/uplink_routes.h"
#include "netns_fixture.h"

namespace uplinkd::netlink {
namespace {

using uplinkd::testing::NetnsTest;
using uplinkd::testing::normalize_lines;
using uplinkd::testing::run_command;

constexpr uint32_t kTable = 1;
constexpr uint32_t kMark = 0x100;
constexpr uint32_t kMask = 0x3f00;
constexpr uint32_t kPref = 2001;
constexpr int kSmallBuffer = 4096;

class RouteEventsTest : public NetnsTest {
 protected:
  using CommandResult = uplinkd::testing::CommandResult;

  static int wan1() { return static_cast<int>(if_nametoindex(kUplink)); }  // the thread is in the router

  std::string show(const std::string& args) { return normalize_lines(router_ip(args)); }

  // The routes `ip` lists in an IPv4 table, default routes left out, one line each.
  std::set<std::string> ipv4_routes(const std::string& table) {
    CommandResult result = run_command("ip -n " + router_ns_ + " -4 route show table " + table);
    std::set<std::string> lines;
    std::istringstream in(normalize_lines(result.output));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("default", 0) != 0 && line.find("FIB table does not exist") == std::string::npos) {
        lines.insert(line);
      }
    }
    return lines;
  }

  void install(UplinkRoutes& routes) {
    std::string error;
    ASSERT_EQ(routes.install(kTable, wan1(), AF_INET, IpAddress::parse(kIspV4), kMark, kMask, kPref, &error),
              0)
        << error;
  }

  void copy(PolicyRules& rules) {
    std::string error;
    ASSERT_EQ(rules.sync_table(kTable, wan1(), AF_INET, {}, &error), 0) << error;
  }

  // Runs `lines` as one `ip -batch` in the router: thousands of rtnetlink requests in well under a
  // second, faster than anyone reads their notifications.
  void ip_batch(const std::vector<std::string>& lines) {
    char path[] = "/tmp/uplinkd-route-events-XXXXXX";
    const int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    {
      std::ofstream out(path);
      for (const std::string& l : lines) out << l << '\n';
    }
    CommandResult result = run_command("ip -n " + router_ns_ + " -batch " + path);
    unlink(path);
    ASSERT_EQ(result.status, 0) << result.output.substr(0, 2000);
  }
};

std::string host(int n, int base) {  // 10.<base>.<n / 250>.<n % 250 + 1>
  return "10." + std::to_string(base) + "." + std::to_string(n / 250) + "." + std::to_string(n % 250 + 1);
}

// Appends `count` `ip -batch` lines "route <verb> <host(n, base)> via 192.0.2.1 dev wan1".
void add_route_lines(std::vector<std::string>* lines, const char* verb, int count, int base) {
  lines->reserve(lines->size() + static_cast<size_t>(count));
  for (int n = 0; n < count; ++n) {
    lines->push_back(std::string("route ") + verb + " " + host(n, base) + " via 192.0.2.1 dev wan1");
  }
}

// ---- overrun and resync ------------------------------------------------------------------------------

TEST_F(RouteEventsTest, BurstOverrunsASmallBufferAndTheResyncMakesTheTableACopyAgain) {
  UplinkRoutes routes;
  ASSERT_NO_FATAL_FAILURE(install(routes));
  // 500 routes the table holds copies of before the burst.
  std::vector<std::string> before;
  add_route_lines(&before, "add", 500, 30);
  ASSERT_NO_FATAL_FAILURE(ip_batch(before));
  PolicyRules rules;
  ASSERT_NO_FATAL_FAILURE(copy(rules));
  ASSERT_EQ(ipv4_routes("1"), ipv4_routes("main"));
  ASSERT_EQ(ipv4_routes("1").size(), 501U);  // and the connected 192.0.2.0/24

  RouteEvents events(kSmallBuffer);
  ASSERT_TRUE(events.ok()) << events.error();
  EXPECT_LT(events.receive_buffer(), 64 * 1024);
  // 10,000 changes in the main table through wan1: 5,000 added, the 500 copied ones and 4,500 of the new
  // ones deleted. 500 new routes remain; the table's 500 copies of the old ones are now wrong.
  std::vector<std::string> burst;
  add_route_lines(&burst, "add", 5000, 20);
  add_route_lines(&burst, "del", 500, 30);
  add_route_lines(&burst, "del", 4500, 20);
  ASSERT_EQ(burst.size(), 10000U);
  ASSERT_NO_FATAL_FAILURE(ip_batch(burst));

  const RouteEventSummary summary = events.drain();
  EXPECT_TRUE(summary.overrun) << summary.messages << " messages read, no overrun reported";
  EXPECT_LT(summary.messages, 10000U);
  const std::set<std::string> main = ipv4_routes("main");
  ASSERT_EQ(main.size(), 501U);
  EXPECT_NE(ipv4_routes("1"), main) << "the table followed the burst by itself";

  // What the daemon does on an overrun: the uplink's own default route and rule, then the copies.
  std::string error;
  int repaired = -1;
  ASSERT_EQ(routes.resync(&error, &repaired), 0) << error;
  EXPECT_EQ(repaired, 0);  // the burst did not touch table 1's default route
  int added = 0;
  int removed = 0;
  ASSERT_EQ(rules.sync_table(kTable, wan1(), AF_INET, {}, &error, &added, &removed), 0) << error;
  EXPECT_EQ(added, 500);
  EXPECT_EQ(removed, 500);
  EXPECT_EQ(ipv4_routes("1"), ipv4_routes("main"));
  EXPECT_EQ(show("-4 route show table 1 default"), "default via 192.0.2.1 dev wan1 proto static\n");
}

TEST_F(RouteEventsTest, FewChangesWithTheDefaultBufferAreReportedWithoutOverrun) {
  RouteEvents events;
  ASSERT_TRUE(events.ok()) << events.error();
  EXPECT_GE(events.receive_buffer(), RouteEvents::kDefaultReceiveBuffer);  // root: SO_RCVBUFFORCE
  EXPECT_FALSE(events.drain().changed());

  std::vector<std::string> changes;
  add_route_lines(&changes, "add", 20, 20);
  changes.push_back("route del " + host(0, 20) + " via " + kIspV4 + " dev wan1");
  changes.push_back("route add 198.51.100.0/24 via 192.0.2.1 dev wan1 table 300");
  changes.push_back("address add 10.99.0.1/24 dev wan1");
  ASSERT_NO_FATAL_FAILURE(ip_batch(changes));

  const RouteEventSummary summary = events.drain();
  EXPECT_FALSE(summary.overrun);
  EXPECT_TRUE(summary.routes);
  EXPECT_TRUE(summary.addresses);
  EXPECT_EQ(summary.malformed, 0U);
  EXPECT_GE(summary.messages, 23U);  // the address brings its local and connected routes along
  EXPECT_EQ(summary.route_tables, (std::vector<uint32_t>{RT_TABLE_MAIN, RT_TABLE_LOCAL, 300}));
  EXPECT_FALSE(events.drain().changed()) << "all of it was read at once";
}

TEST_F(RouteEventsTest, DevicesThatComeAndGoAreListedWithTheirNames) {
  RouteEvents events;
  ASSERT_TRUE(events.ok()) << events.error();
  router_ip("link add tst0 type veth peer name tst1");
  const int tst0 = static_cast<int>(if_nametoindex("tst0"));
  const int tst1 = static_cast<int>(if_nametoindex("tst1"));
  RouteEventSummary added = events.drain();
  EXPECT_TRUE(added.links);
  ASSERT_EQ(added.new_links.size(), 2U);  // the peer is registered first; the order is the kernel's
  EXPECT_TRUE(added.link_added(tst0) && added.link_added(tst1));
  for (const LinkEvent& l : added.new_links) EXPECT_EQ(l.name, l.ifindex == tst0 ? "tst0" : "tst1");
  EXPECT_TRUE(added.deleted_links.empty());

  router_ip("link set tst0 up");
  RouteEventSummary up = events.drain();
  EXPECT_TRUE(up.links);
  EXPECT_TRUE(up.new_links.empty()) << "a change of a device is not a new device";

  router_ip("link del tst0");  // its peer goes with it
  RouteEventSummary deleted = events.drain();
  EXPECT_TRUE(deleted.link_deleted(tst0));
  EXPECT_TRUE(deleted.link_deleted(tst1));
  EXPECT_EQ(deleted.deleted_links.size(), 2U);
  EXPECT_FALSE(deleted.overrun);
}

// ---- what UplinkRoutes::resync puts back -------------------------------------------------------------

TEST_F(RouteEventsTest, ResyncRestoresTheDefaultRouteADeviceFlapTookAway) {
  UplinkRoutes routes;
  ASSERT_NO_FATAL_FAILURE(install(routes));
  // Down and up again between two device polls: same device, same ifindex, but the kernel removed every
  // route through it, table 1's default route included.
  router_ip("link set wan1 down");
  router_ip("link set wan1 up");
  ASSERT_TRUE(uplinkd::testing::wait_until(
      [&] { return show("-o link show dev wan1").find("state UP") != std::string::npos; }));
  EXPECT_EQ(run_command("ip -n " + router_ns_ + " -4 route show table 1 default").output, "");

  std::string error;
  int repaired = 0;
  ASSERT_EQ(routes.resync(&error, &repaired), 0) << error;
  EXPECT_EQ(repaired, 1);
  EXPECT_EQ(show("-4 route show table 1 default"), "default via 192.0.2.1 dev wan1 proto static\n");
}

TEST_F(RouteEventsTest, ResyncRestoresAFlushedRuleAndWritesNothingWhenAllIsInPlace) {
  UplinkRoutes routes;
  ASSERT_NO_FATAL_FAILURE(install(routes));
  router_ip("-4 rule del pref 2001");
  std::string error;
  int repaired = 0;
  ASSERT_EQ(routes.resync(&error, &repaired), 0) << error;
  EXPECT_EQ(repaired, 1);
  EXPECT_NE(show("-4 rule show").find("2001:\tfrom all fwmark 0x100/0x3f00 lookup 1\n"), std::string::npos);

  RouteEvents events;
  ASSERT_TRUE(events.ok()) << events.error();
  ASSERT_EQ(routes.resync(&error, &repaired), 0) << error;
  EXPECT_EQ(repaired, 0);
  EXPECT_FALSE(events.drain().routes) << "a resync with nothing missing wrote a route";

  routes.remove_all();  // the re-added rule is ours now: it goes too
  EXPECT_EQ(show("-4 rule show").find("2001:"), std::string::npos);
}

TEST_F(RouteEventsTest, ResyncLeavesAnUplinkWhoseDeviceIsDownOrGoneToTheDevicePoll) {
  UplinkRoutes routes;
  ASSERT_NO_FATAL_FAILURE(install(routes));
  std::string error;
  int repaired = -1;
  router_ip("link set wan1 down");
  EXPECT_EQ(routes.resync(&error, &repaired), 0) << error;
  EXPECT_EQ(repaired, 0);
  EXPECT_EQ(run_command("ip -n " + router_ns_ + " -4 route show table 1").output, "");

  router_ip("link del wan1");
  repaired = -1;
  EXPECT_EQ(routes.resync(&error, &repaired), 0) << error;
  EXPECT_EQ(repaired, 0);
}

}  // namespace
}  // namespace uplinkd::netlink
