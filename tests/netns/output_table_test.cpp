// OutputTable (loader/local_out/output_table.h) loaded into a real nft in a router namespace: the
// router's own datagrams and pings leave by the uplink their rule's policy picks, a policy update
// (failover) moves them without rebuilding the chains, a connected destination stays in the main
// table, a re-routed packet gets its uplink's source address, and the destructor leaves nothing.
//
//   rt: wan1 192.0.2.2/24 (peer wan1p), wan2 198.51.100.2/24 (peer wan2p), both veths in rt;
//       main: default via 192.0.2.1 dev wan1; table 1: default via wan1; table 2: default via wan2;
//       mwan3's fwmark rules for marks 0x100 (table 1) and 0x200 (table 2), unreachable for 0x3e00.
// Which device a packet left by is counted by nft counters at postrouting (after source NAT).
// The namespace is ulh15ot-<pid>-<n>; the test thread works inside it.
#include "local_out/output_table.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "netlink/ct_mark.h"
#include "netns_fixture.h"
#include "one_namespace.h"

namespace uplinkd::local_out {
namespace {

using uplinkd::testing::enter_netns;
using uplinkd::testing::must_run;
using uplinkd::testing::run_command;

constexpr const char* kTable = "ulh15-out";

const std::string kConfig =
    "config interface 'wan'\n"
    "\toption enabled '1'\n"
    "\toption device 'wan1'\n"
    "config interface 'wanb'\n"
    "\toption enabled '1'\n"
    "\toption device 'wan2'\n"
    "config member 'wan_m1'\n"
    "\toption interface 'wan'\n"
    "\toption metric '1'\n"
    "config member 'wanb_m2'\n"
    "\toption interface 'wanb'\n"
    "\toption metric '2'\n"
    "config member 'wanb_m1'\n"
    "\toption interface 'wanb'\n"
    "config policy 'failover'\n"
    "\tlist use_member 'wan_m1'\n"
    "\tlist use_member 'wanb_m2'\n"
    "config policy 'wanb_only'\n"
    "\tlist use_member 'wanb_m1'\n"
    "config rule 'dns'\n"
    "\toption proto 'udp'\n"
    "\toption dest_ip '203.0.113.3'\n"
    "\toption dest_port '53'\n"
    "\toption use_policy 'wanb_only'\n"
    "config rule 'default_rule_v4'\n"
    "\toption dest_ip '0.0.0.0/0'\n"
    "\toption family 'ipv4'\n"
    "\toption use_policy 'failover'\n";

constexpr const char* kCounters = R"(table inet ulh15_count {
  counter udp_wan1 { }
  counter udp_wan2 { }
  counter udp_wan2_own_source { }
  counter icmp_wan1 { }
  counter icmp_wan2 { }
  counter keep_wan1 { }
  counter keep_wan2 { }
  chain post {
    type filter hook postrouting priority 300; policy accept;
    oifname "wan1" udp dport 53 counter name "udp_wan1"
    oifname "wan2" udp dport 53 counter name "udp_wan2"
    oifname "wan2" ip saddr 198.51.100.2 udp dport 53 counter name "udp_wan2_own_source"
    oifname "wan1" icmp type echo-request counter name "icmp_wan1"
    oifname "wan2" icmp type echo-request counter name "icmp_wan2"
    oifname "wan1" udp dport 5300 counter name "keep_wan1"
    oifname "wan2" udp dport 5300 counter name "keep_wan2"
  }
})";

class OutputTableTest : public uplinkd::testing::OneNamespaceTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(create_namespace("ulh15ot"));
    if (run_command("command -v nft").status != 0)
      GTEST_SKIP() << "needs the nft tool (Debian package nftables)";
    ASSERT_NO_FATAL_FAILURE(build_topology());
    ASSERT_EQ(enter_netns("/run/netns/" + ns_), 0);

    cfg_ = config::parse(kConfig, "mwan3");
    ids_ = policy::assign_policy_ids(cfg_);
    rules_ = policy::compile_rules(cfg_, ids_, {});
    plan_.marks = policy::MarkSpace::from_mask(cfg_.globals.mmx_mask);
    plan_.uplinks = output_uplinks(cfg_);
    for (const auto& [name, id] : ids_) plan_.policy_ids.push_back(id);
    plan_.rules = &rules_;
  }

  void build_topology() {
    must_run("ip -n " + ns_ + " link set lo up");
    must_run("ip -n " + ns_ + " link add wan1 type veth peer name wan1p");
    must_run("ip -n " + ns_ + " link add wan2 type veth peer name wan2p");
    for (const char* dev : {"wan1", "wan1p", "wan2", "wan2p"})
      must_run("ip -n " + ns_ + " link set " + dev + " up");
    must_run("ip -n " + ns_ + " addr add 192.0.2.2/24 dev wan1");
    must_run("ip -n " + ns_ + " addr add 198.51.100.2/24 dev wan2");
    must_run("ip -n " + ns_ + " route add default via 192.0.2.1 dev wan1 metric 10");
    must_run("ip -n " + ns_ + " route add default via 192.0.2.1 dev wan1 table 1");
    must_run("ip -n " + ns_ + " route add default via 198.51.100.1 dev wan2 table 2");
    must_run("ip -n " + ns_ + " rule add pref 2001 fwmark 0x100/0x3f00 lookup 1");
    must_run("ip -n " + ns_ + " rule add pref 2002 fwmark 0x200/0x3f00 lookup 2");
    must_run("ip -n " + ns_ + " rule add pref 2062 fwmark 0x3e00/0x3f00 unreachable");
    // Neighbours that never answer: packets still pass postrouting, where they are counted.
    must_run("ip -n " + ns_ + " neigh add 192.0.2.1 lladdr 02:00:00:00:00:01 dev wan1 nud permanent");
    must_run("ip -n " + ns_ + " neigh add 198.51.100.1 lladdr 02:00:00:00:00:02 dev wan2 nud permanent");
    must_run("printf '%s\\n' '" + std::string(kCounters) + "' | " + in("nft -f -"));
  }

  void install(OutputTable& table, const policy::OnlineInterfaces& online) {
    const std::vector<netlink::SetPrefix> connected = {{*IpAddress::parse("192.0.2.0"), 24},
                                                       {*IpAddress::parse("198.51.100.0"), 24},
                                                       {*IpAddress::parse("192.0.2.2"), 32},
                                                       {*IpAddress::parse("198.51.100.2"), 32},
                                                       {*IpAddress::parse("127.0.0.0"), 8}};
    table.rebuild(plan_, policy::resolve_policies(cfg_, online), ids_, connected, {});
  }

  // One datagram from the router itself (bash's /dev/udp); true when the kernel took it.
  bool send_udp(const std::string& address, int port) const {
    return run_command(in("bash -c 'echo uplinkd > /dev/udp/" + address + "/" + std::to_string(port) + "'"))
               .status == 0;
  }
  void ping(const std::string& address) const { run_command(in("ping -n -c 1 -W 1 " + address)); }

  uint64_t counted(const std::string& name) const {
    const std::string out = run_command(in("nft list counter inet ulh15_count " + name)).output;
    const size_t at = out.find("packets ");
    return at == std::string::npos ? 0 : std::stoull(out.substr(at + 8));
  }
  void reset() const { run_command(in("nft reset counters table inet ulh15_count")); }
  std::string tables() const { return run_command(in("nft list tables")).output; }

  config::Config cfg_;
  std::map<std::string, uint32_t> ids_;
  policy::CompiledRules rules_;
  OutputPlan plan_;
};

TEST_F(OutputTableTest, RouterPacketsLeaveByTheirRulesUplink) {
  OutputTable table(kTable);
  install(table, {"wan", "wanb"});

  EXPECT_TRUE(send_udp("203.0.113.3", 53));  // rule dns: wanb_only
  EXPECT_EQ(counted("udp_wan2"), 1u);
  EXPECT_EQ(counted("udp_wan1"), 0u);
  EXPECT_EQ(counted("udp_wan2_own_source"), 1u)
      << "re-routed from wan1's source: masqueraded to wan2's address";

  ping("203.0.113.4");  // default rule: failover, wan first
  EXPECT_EQ(counted("icmp_wan1"), 1u);
  EXPECT_EQ(counted("icmp_wan2"), 0u);
}

TEST_F(OutputTableTest, FailoverMovesThemWithElementUpdatesOnly) {
  OutputTable table(kTable);
  install(table, {"wan", "wanb"});
  const std::string chains_before =
      run_command(in(std::string("nft list chain inet ") + kTable + " output")).output;

  table.publish(policy::resolve_policies(cfg_, {"wanb"}), ids_);  // wan offline
  ping("203.0.113.4");
  EXPECT_EQ(counted("icmp_wan2"), 1u) << "failover's backup member";
  EXPECT_EQ(counted("icmp_wan1"), 0u);

  table.publish(policy::resolve_policies(cfg_, {"wan"}), ids_);  // wanb offline: wanb_only unreachable
  EXPECT_FALSE(send_udp("203.0.113.3", 53)) << "wanb_only has no member online: last_resort unreachable";
  EXPECT_EQ(counted("udp_wan1") + counted("udp_wan2"), 0u);

  EXPECT_EQ(run_command(in(std::string("nft list chain inet ") + kTable + " output")).output, chains_before);
}

// The ct mark table saves the mark to the connection; the output table restores it, so a connection
// keeps its uplink when the policy would now choose another one for a new connection.
TEST_F(OutputTableTest, AConnectionKeepsItsUplinkThroughItsCtMark) {
  netlink::CtMarkRules ct_marks("ulh15-ct", plan_.marks.mask, {{0x100, "wan1"}, {0x200, "wan2"}});
  OutputTable table(kTable);
  install(table, {"wan", "wanb"});
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(5300);
  inet_pton(AF_INET, "203.0.113.4", &to.sin_addr);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
  EXPECT_EQ(send(fd, "a", 1, 0), 1);
  table.publish(policy::resolve_policies(cfg_, {"wanb"}), ids_);  // new connections: wanb
  EXPECT_EQ(send(fd, "b", 1, 0), 1);
  close(fd);
  EXPECT_EQ(counted("keep_wan1"), 2u) << "both datagrams of the connection by wan1";
  EXPECT_EQ(counted("keep_wan2"), 0u);
  EXPECT_TRUE(send_udp("203.0.113.4", 5300));  // a new connection takes the policy's choice now
  EXPECT_EQ(counted("keep_wan2"), 1u);
}

TEST_F(OutputTableTest, ConnectedDestinationsAndMarkedSocketsAreLeftAlone) {
  OutputTable table(kTable);
  install(table, {"wan", "wanb"});
  // 198.51.100.9 is on wan2's network: the main table's connected route, not the default rule's wan1.
  EXPECT_TRUE(send_udp("198.51.100.9", 53));
  EXPECT_EQ(counted("udp_wan2"), 1u);
  EXPECT_EQ(counted("udp_wan1"), 0u);
  reset();
  // A socket that carries a mark of ours (a probe, `uplinkctl use`) keeps it: ping -m sets SO_MARK (0x200).
  run_command(in("ping -n -c 1 -W 1 -m 512 203.0.113.4"));
  EXPECT_EQ(counted("icmp_wan2"), 1u);
  EXPECT_EQ(counted("icmp_wan1"), 0u);
}

TEST_F(OutputTableTest, ReplacesALeftoverTableAndTheDestructorLeavesNothing) {
  must_run(in(std::string("nft add table inet ") + kTable));
  must_run(in(std::string("nft add chain inet ") + kTable + " stale"));
  {
    OutputTable table(kTable);
    install(table, {"wan", "wanb"});
    const std::string listing = run_command(in(std::string("nft list table inet ") + kTable)).output;
    EXPECT_EQ(listing.find("chain stale"), std::string::npos) << listing;
    EXPECT_NE(listing.find("type route hook output priority mangle"), std::string::npos) << listing;
  }
  EXPECT_EQ(tables().find(kTable), std::string::npos) << tables();
  EXPECT_THROW(OutputTable("bad name"), std::invalid_argument);
}

}  // namespace
}  // namespace uplinkd::local_out
