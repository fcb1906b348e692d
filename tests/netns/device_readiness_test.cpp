// A point-to-point uplink whose addresses arrive after its device (a PPPoE session: pppd creates
// pppoe-wan, brings it up, and sets the local address and then the peer once IPCP is done). The host
// has no PPP, so a tun device stands in: like ppp it is POINTOPOINT and NOARP, with no Ethernet
// header. What the daemon relies on is checked against the kernel: the device waits while it has no
// address, the route via the peer is refused while the address has no peer yet (the issue's `Network
// is unreachable`, on which the daemon waits too), read_device_addresses tells the states apart, and
// the address notification arrives at once, so the routes go in on it, well within 200 ms and with no
// timer, where before they waited for the 2 s retry.
#include "daemon/device_readiness.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>

#include "common/ip_address.h"
#include "daemon/link_state.h"
#include "netlink/route_events.h"
#include "netlink/uplink_routes.h"
#include "netns_fixture.h"

namespace uplinkd {
namespace {

using uplinkd::testing::NetnsTest;
using uplinkd::testing::normalize_lines;
using uplinkd::testing::wait_until;

constexpr const char* kPpp = "pppoe-wan";
constexpr const char* kLocal = "10.64.0.2";
constexpr const char* kPeer = "10.64.0.1";
constexpr uint32_t kTable = 7;
constexpr uint32_t kMark = 0x700;
constexpr uint32_t kMask = 0x3f00;
constexpr uint32_t kPref = 2007;

class DeviceReadinessTest : public NetnsTest {
 protected:
  void TearDown() override {
    if (tun_fd_ >= 0) close(tun_fd_);
    NetnsTest::TearDown();
  }

  // A tun device in the router namespace (this thread's), held open so that it has carrier, and up.
  void create_tun() {
    tun_fd_ = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (tun_fd_ < 0) GTEST_SKIP() << "/dev/net/tun cannot be opened (" << std::strerror(errno) << ")";
    ifreq request{};
    std::strncpy(request.ifr_name, kPpp, IFNAMSIZ - 1);
    request.ifr_flags = IFF_TUN | IFF_NO_PI;
    ASSERT_EQ(ioctl(tun_fd_, TUNSETIFF, &request), 0) << "TUNSETIFF: " << std::strerror(errno);
    // As a ppp device, which gets the link-local addresses pppd sets and none of its own.
    router_ip(std::string("link set ") + kPpp + " addrgenmode none");
    router_ip(std::string("link set ") + kPpp + " up");
  }

  // Waits (bounded) for notifications and reads them: what the daemon's loop does on the socket.
  static netlink::RouteEventSummary next_events(netlink::RouteEvents& events, int timeout_ms) {
    pollfd p{events.fd(), POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return {};
    return events.drain();
  }

  std::string table() { return normalize_lines(router_ip("-4 route show table " + std::to_string(kTable))); }

  int tun_fd_ = -1;
};

TEST_F(DeviceReadinessTest, RoutesGoInOnTheAddressNotificationOfAPointToPointDevice) {
  netlink::RouteEvents events;
  ASSERT_TRUE(events.ok()) << events.error();
  ASSERT_NO_FATAL_FAILURE(create_tun());
  if (IsSkipped()) return;
  const LinkState link = read_link(kPpp);
  ASSERT_NE(link.ifindex, 0);
  EXPECT_TRUE(link.up) << "a held tun device that is up is running";
  EXPECT_FALSE(link.ethernet);
  EXPECT_TRUE(link.point_to_point);
  const IpAddress peer = *IpAddress::parse(kPeer);

  // The device is up with no address: what the daemon saw after a redial.
  EXPECT_TRUE(waits_for_addresses(link));
  EXPECT_EQ(missing_addresses(link, AF_INET, read_device_addresses(kPpp, AF_INET)),
            "has no IPv4 address yet");
  netlink::UplinkRoutes routes;
  std::string error;
  const int refused = routes.install(kTable, link.ifindex, AF_INET, peer, kMark, kMask, kPref, &error);
  EXPECT_EQ(refused, -ENETUNREACH) << "the route via the peer before the peer address exists: " << error;

  // pppd's first step: the local address alone (SIOCSIFADDR). Still not enough for a route via the peer.
  router_ip(std::string("addr add ") + kLocal + "/32 dev " + kPpp);
  EXPECT_TRUE(next_events(events, 1000).addresses);
  const DeviceAddresses local_only = read_device_addresses(kPpp, AF_INET);
  EXPECT_TRUE(local_only.local);
  EXPECT_FALSE(local_only.peer);
  EXPECT_EQ(missing_addresses(link, AF_INET, local_only), "");
  EXPECT_EQ(routes.install(kTable, link.ifindex, AF_INET, peer, kMark, kMask, kPref, &error), -ENETUNREACH)
      << "the route via a peer the device has no address for: " << error;
  (void)events.drain();

  // Its second (SIOCSIFDSTADDR): the address again, now with the peer.
  router_ip(std::string("addr del ") + kLocal + "/32 dev " + kPpp);
  router_ip(std::string("addr add ") + kLocal + " peer " + kPeer + "/32 dev " + kPpp);
  const auto t0 = std::chrono::steady_clock::now();
  bool announced = false;
  bool ready = false;
  for (int i = 0; i < 10 && !ready; ++i) {  // the delete and the add may come in separate reads
    announced = next_events(events, 200).addresses || announced;
    ready = read_device_addresses(kPpp, AF_INET).peer;
  }
  ASSERT_TRUE(announced) << "no address notification after the peer address was set";
  ASSERT_TRUE(ready) << "the peer address is not seen";
  ASSERT_EQ(routes.install(kTable, link.ifindex, AF_INET, peer, kMark, kMask, kPref, &error), 0) << error;
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  EXPECT_LT(elapsed.count(), 200) << "routes went in " << elapsed.count() << " ms after the peer address";
  EXPECT_NE(table().find(std::string("default via ") + kPeer + " dev " + kPpp), std::string::npos) << table();
  EXPECT_NE(normalize_lines(router_ip("-4 rule show pref " + std::to_string(kPref))).find("lookup 7"),
            std::string::npos);
}

TEST_F(DeviceReadinessTest, EthernetDevicesDoNotWaitAndIpv6OverPppWaitsForAnyAddress) {
  // wan1 (veth, Ethernet) keeps its own rule: it waits for a gateway, not for addresses.
  const LinkState wan1 = read_link(kUplink);
  EXPECT_TRUE(wan1.ethernet);
  EXPECT_FALSE(wan1.point_to_point);
  EXPECT_FALSE(waits_for_addresses(wan1));
  EXPECT_EQ(missing_addresses(wan1, AF_INET, DeviceAddresses{}), "");
  const DeviceAddresses v4 = read_device_addresses(kUplink, AF_INET);
  EXPECT_TRUE(v4.local);
  EXPECT_FALSE(v4.peer) << "an Ethernet device's broadcast address is no peer";

  ASSERT_NO_FATAL_FAILURE(create_tun());
  if (IsSkipped()) return;
  const LinkState link = read_link(kPpp);
  EXPECT_EQ(missing_addresses(link, AF_INET6, read_device_addresses(kPpp, AF_INET6)),
            "has no IPv6 address yet");
  // IPV6CP gives both ends link-local addresses and no peer address on the device: enough for IPv6.
  router_ip(std::string("addr add fe80::2/64 dev ") + kPpp + " nodad");
  EXPECT_TRUE(wait_until(
      [&] { return missing_addresses(link, AF_INET6, read_device_addresses(kPpp, AF_INET6)).empty(); }));
}

}  // namespace
}  // namespace uplinkd
