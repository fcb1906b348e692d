// A WireGuard device's MTU against the path MTU of every uplink its endpoint's policy may use
// (issue 16), and the MSS that fits a path.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include "wireguard/mtu_check.h"

namespace uplinkd::wireguard {
namespace {

TEST(TunnelMtuCheck, FitsEveryUplinkNoProblem) {
  const TunnelMtuCheck c = check_tunnel_mtu("wg0", 1420, AF_INET, {{"wan", 1500}, {"wanb", 1492}});
  EXPECT_TRUE(c.problems.empty());
  EXPECT_EQ(c.overhead, 60);
  EXPECT_EQ(c.largest_fitting, 1432);
}

// The lab: wg MTU 1420, backup path MTU 1400, IPv4 outer headers: 1340 fits both.
TEST(TunnelMtuCheck, BackupTooSmallNamesDeviceUplinkAndLargestFit) {
  const TunnelMtuCheck c = check_tunnel_mtu("wg0", 1420, AF_INET, {{"wan", 1500}, {"wanb", 1400}});
  ASSERT_EQ(c.problems.size(), 1U);
  EXPECT_EQ(c.largest_fitting, 1340);
  const std::string& p = c.problems[0];
  EXPECT_NE(p.find("wg0 (MTU 1420)"), std::string::npos) << p;
  EXPECT_NE(p.find("uplink wanb (path MTU 1400)"), std::string::npos) << p;
  EXPECT_NE(p.find("1420 + 60 bytes of IPv4 outer headers = 1480"), std::string::npos) << p;
  EXPECT_NE(p.find("largest MTU that fits every uplink of its policy is 1340"), std::string::npos) << p;
}

// wg0's usual 1420 fits a 1500 path with IPv6 outer headers exactly; a PPPoE backup needs 1412.
TEST(TunnelMtuCheck, Ipv6OuterHeadersOverPppoe) {
  const TunnelMtuCheck c = check_tunnel_mtu("wg0", 1420, AF_INET6, {{"wan6", 1500}, {"wanb6", 1492}});
  EXPECT_EQ(c.overhead, 80);
  ASSERT_EQ(c.problems.size(), 1U);
  EXPECT_EQ(c.largest_fitting, 1412);
  EXPECT_NE(c.problems[0].find("80 bytes of IPv6 outer headers = 1500"), std::string::npos) << c.problems[0];
}

// An uplink not measured yet (or whose targets answer no big echo) is never a problem.
TEST(TunnelMtuCheck, UnmeasuredUplinksAreNotProblems) {
  const TunnelMtuCheck c =
      check_tunnel_mtu("wg0", 1420, AF_INET, {{"wan", std::nullopt}, {"wanb", std::nullopt}});
  EXPECT_TRUE(c.problems.empty());
  EXPECT_FALSE(c.largest_fitting.has_value());
}

// WireGuard pads inner packets to 16 bytes: over a 1400-byte path with IPv4 outer headers the
// inner packet may be 1328 bytes (1340 would be padded to 1344 and leave as 1404).
TEST(MssForPath, OuterHeadersPaddingAndInnerHeadersComeOff) {
  EXPECT_EQ(mss_for_path(1400, 60, AF_INET, 1420), 1288);   // 1328 - 20 - 20
  EXPECT_EQ(mss_for_path(1400, 60, AF_INET6, 1420), 1268);  // inner IPv6: 40 + 20
  EXPECT_EQ(mss_for_path(1400, 60, AF_INET, 1340), 1300) << "a device MTU that fits is never padded past";
  // A device that fits the path: its own MSS, padding is capped at the device MTU.
  EXPECT_EQ(mss_for_path(1500, 80, AF_INET, 1420), 1380);
  EXPECT_EQ(mss_for_path(1500, 60, AF_INET, 1420), 1380);
  EXPECT_EQ(mss_for_path(600, 80, AF_INET, 1420), 0) << "a path too small for a sensible MSS clamps nothing";
}

}  // namespace
}  // namespace uplinkd::wireguard
