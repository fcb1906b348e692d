// CtMarkRules in a router namespace that really forwards: a LAN client sends UDP datagrams through
// the router to a server; a stand-in for uplinkd's classifier (an nft prerouting rule) sets the
// packet mark, and the conntrack entries must come out with the uplink bits copied and every other
// ct mark bit kept. A UDP port forward on the uplink is answered with the uplink's mark. Also:
// update(), the destructor, a stale table of a crashed run, bad input.
//
//   lan   lan0 10.1.0.2/24  2001:db8:10::2/64
//   rt    lan0 10.1.0.1/24  2001:db8:10::1/64 | wan0 198.51.100.1/24  2001:db8:20::1/64
//   srv   wan0 198.51.100.7/24  2001:db8:20::7/64
//
// Namespaces are named ulh2cm-<pid>-<n>-{lan,rt,srv}; the test thread works inside rt.
#include "netlink/ct_mark.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "netns_fixture.h"

namespace uplinkd::netlink {
namespace {

using uplinkd::testing::enter_netns;
using uplinkd::testing::must_run;
using uplinkd::testing::run_command;
using uplinkd::testing::wait_until;

constexpr uint32_t kMask = 0x3f00;
constexpr const char* kTable = "ulh2_ctmark";

// Uplinks known by mark only: the copy rules, no inbound rules.
std::vector<UplinkMark> marks(std::initializer_list<uint32_t> values) {
  std::vector<UplinkMark> uplinks;
  for (uint32_t mark : values) uplinks.push_back({mark, ""});
  return uplinks;
}

// What the classifier would do, plus a firewall's own ct mark bit (0x10000) and an old uplink
// id (0x200) already on every new entry, which the copy must keep and replace respectively.
constexpr const char* kStandIn = R"(table inet ulh2_standin {
  chain prerouting {
    type filter hook prerouting priority -150; policy accept;
    ct state new ct mark set 0x10200
    udp dport 5353 meta mark set 0x100
    udp dport 5354 meta mark set 0x300
  }
})";

class CtMarkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const std::string base = "ulh2cm-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    original_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(original_, 0);
    for (const char* role : {"lan", "rt", "srv"}) {
      const std::string ns = base + "-" + role;
      ASSERT_EQ(run_command("ip netns add " + ns).status, 0) << "ip netns add " << ns << " (root needed)";
      namespaces_.push_back(ns);
    }
    lan_ = namespaces_[0];
    rt_ = namespaces_[1];
    srv_ = namespaces_[2];
    if (run_command("command -v conntrack").status != 0 || run_command("command -v nft").status != 0) {
      GTEST_SKIP() << "needs the conntrack and nft tools (Debian packages conntrack, nftables)";
    }
    ASSERT_NO_FATAL_FAILURE(build_topology());
    ASSERT_EQ(enter_netns("/run/netns/" + rt_), 0);
  }

  void TearDown() override {
    if (original_ >= 0) {
      EXPECT_EQ(setns(original_, CLONE_NEWNET), 0);
      close(original_);
    }
    for (const std::string& ns : namespaces_) {
      EXPECT_EQ(run_command("ip netns del " + ns).status, 0) << "ip netns del " << ns;
    }
  }

  std::string in(const std::string& ns, const std::string& command) {
    return "ip netns exec " + ns + " " + command;
  }

  void build_topology() {
    must_run("ip -n " + lan_ + " link add lan0 type veth peer name lan0 netns " + rt_);
    must_run("ip -n " + srv_ + " link add wan0 type veth peer name wan0 netns " + rt_);
    for (const std::string& ns : namespaces_) {
      must_run(in(ns, "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"));
      must_run("ip -n " + ns + " link set lo up");
    }
    must_run(in(rt_, "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"));
    address(lan_, "lan0", "10.1.0.2/24", "2001:db8:10::2/64");
    address(rt_, "lan0", "10.1.0.1/24", "2001:db8:10::1/64");
    address(rt_, "wan0", "198.51.100.1/24", "2001:db8:20::1/64");
    address(srv_, "wan0", "198.51.100.7/24", "2001:db8:20::7/64");
    must_run("ip -n " + lan_ + " route add default via 10.1.0.1");
    must_run("ip -n " + lan_ + " -6 route add default via 2001:db8:10::1");
    must_run("ip -n " + srv_ + " route add default via 198.51.100.1");
    must_run("ip -n " + srv_ + " -6 route add default via 2001:db8:20::1");
    must_run("printf '%s\\n' '" + std::string(kStandIn) + "' | " + in(rt_, "nft -f -"));
  }

  void address(const std::string& ns, const std::string& dev, const std::string& v4, const std::string& v6) {
    must_run("ip -n " + ns + " addr add " + v4 + " dev " + dev);
    must_run("ip -n " + ns + " addr add " + v6 + " dev " + dev + " nodad");
    must_run("ip -n " + ns + " link set " + dev + " up");
  }

  // One real datagram from the LAN client through the router (bash's /dev/udp: no extra tool).
  void send_udp(const std::string& server, int port) {
    must_run(in(lan_, "bash -c 'echo uplinkd > /dev/udp/" + server + "/" + std::to_string(port) + "'"));
  }

  // The ct mark of the router's entry for this destination, once there is one.
  std::optional<uint32_t> ct_mark_of(const std::string& family, int port) {
    std::optional<uint32_t> mark;
    wait_until(
        [&] {
          const std::string list = run_command(in(rt_, "conntrack -L -f " + family + " -p udp --dport " +
                                                           std::to_string(port) + " 2>/dev/null"))
                                       .output;
          const size_t at = list.find(" mark=");
          if (at != std::string::npos) {
            mark = static_cast<uint32_t>(std::stoul(list.substr(at + 6)));
          }
          return mark.has_value();
        },
        std::chrono::milliseconds(3000));
    return mark;
  }

  std::string nft_tables() { return run_command(in(rt_, "nft list tables")).output; }
  std::string our_table() {
    return run_command(in(rt_, std::string("nft list table inet ") + kTable)).output;
  }

  static size_t count(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
      n++;
    }
    return n;
  }

  std::vector<std::string> namespaces_;
  std::string lan_, rt_, srv_;
  int original_ = -1;
};

TEST_F(CtMarkTest, CopiesTheUplinkBitsOfForwardedFlowsAndKeepsTheOthers) {
  CtMarkRules rules(kTable, kMask, marks({0x100, 0x300}));

  send_udp("198.51.100.7", 5353);  // packet mark 0x100
  send_udp("198.51.100.7", 5354);  // packet mark 0x300
  send_udp("198.51.100.7", 5355);  // no packet mark
  send_udp("2001:db8:20::7", 5353);

  // 0x10200 on creation: 0x10000 kept, the old id 0x200 replaced by the packet's.
  EXPECT_EQ(ct_mark_of("ipv4", 5353), std::optional<uint32_t>(0x10100));
  EXPECT_EQ(ct_mark_of("ipv4", 5354), std::optional<uint32_t>(0x10300));
  EXPECT_EQ(ct_mark_of("ipv4", 5355), std::optional<uint32_t>(0x10200));  // unmarked: untouched
  EXPECT_EQ(ct_mark_of("ipv6", 5353), std::optional<uint32_t>(0x10100));
}

TEST_F(CtMarkTest, RulesListBackAsWritten) {
  CtMarkRules rules(kTable, kMask, marks({0x100, 0x200}));
  const std::string table = our_table();
  EXPECT_NE(table.find("type filter hook postrouting priority mangle; policy accept;"), std::string::npos)
      << table;
  // nft 1.0.6 folds `& 0xffffc0ff | 0x100` into `& 0xffffc1ff | 0x100`: the same bits.
  EXPECT_NE(table.find("meta mark & 0x00003f00 == 0x00000100 ct mark & 0x00003f00 != 0x00000100 "
                       "ct mark set ct mark & 0xffffc1ff | 0x00000100"),
            std::string::npos)
      << table;
  EXPECT_EQ(count(table, "ct mark set"), 2u) << table;
}

TEST_F(CtMarkTest, UpdateReplacesTheRulesAndTheDestructorLeavesNothing) {
  {
    CtMarkRules rules(kTable, kMask, marks({0x100}));
    EXPECT_EQ(count(our_table(), "ct mark set"), 1u);
    rules.update(marks({0x200, 0x300, 0x400}));
    const std::string table = our_table();
    EXPECT_EQ(count(table, "ct mark set"), 3u) << table;
    EXPECT_EQ(table.find("== 0x00000100"), std::string::npos) << table;
    EXPECT_EQ(rules.uplinks(), marks({0x200, 0x300, 0x400}));

    send_udp("198.51.100.7", 5354);  // 0x300 is still copied after the update
    EXPECT_EQ(ct_mark_of("ipv4", 5354), std::optional<uint32_t>(0x10300));

    rules.update({});
    EXPECT_EQ(count(our_table(), "ct mark set"), 0u);
    EXPECT_THROW(rules.update(marks({0x100, 0x4000})), std::invalid_argument);  // outside the mask
    EXPECT_EQ(count(our_table(), "ct mark set"), 0u);                           // unchanged on failure
  }
  EXPECT_EQ(nft_tables().find(kTable), std::string::npos) << nft_tables();
  EXPECT_NE(nft_tables().find("ulh2_standin"), std::string::npos);  // someone else's table stays
}

// A UDP port forward on the uplink wan0 (198.51.100.1:6000 -> the LAN's 10.1.0.2:6000): the
// entry gets wan0's uplink bits on arrival, and the LAN server's answer carries wan0's packet
// mark when it is routed (so uplinkd's fwmark rule would send it out of wan0). A flow the LAN
// opened towards wan0 carries the same ct mark, but its replies (arriving on wan0) stay unmarked.
TEST_F(CtMarkTest, ConnectionsArrivingOnAnUplinkAreAnsweredWithItsMark) {
  CtMarkRules rules(kTable, kMask, {{0x100, ""}, {0x300, "wan0"}});
  must_run(in(rt_, "nft add rule inet ulh2_standin prerouting udp dport 7000 meta mark set 0x300"));
  const std::string extra = R"(table ip ulh2_fwd {
  chain pre {
    type nat hook prerouting priority -100; policy accept;
    iifname "wan0" udp dport 6000 dnat to 10.1.0.2:6000
  }
}
table inet ulh2_count {
  counter answer_marked { }
  counter answer_unmarked { }
  counter reply_marked { }
  counter reply_unmarked { }
  chain post {
    type filter hook postrouting priority 100; policy accept;
    oifname "wan0" udp sport 6000 meta mark & 0x3f00 == 0x300 counter name "answer_marked"
    oifname "wan0" udp sport 6000 meta mark & 0x3f00 != 0x300 counter name "answer_unmarked"
    oifname "lan0" udp sport 7000 meta mark & 0x3f00 != 0 counter name "reply_marked"
    oifname "lan0" udp sport 7000 meta mark & 0x3f00 == 0 counter name "reply_unmarked"
  }
})";
  must_run("printf '%s\\n' '" + extra + "' | " + in(rt_, "nft -f -"));

  // One-shot UDP echo servers (bounded by timeout) and clients that retry until the server is up.
  const auto echo_server = [&](const std::string& ns, const std::string& address, int port) {
    must_run(in(ns,
                "timeout 15 python3 -c 'import socket\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "s.bind((\"" +
                    address + "\", " + std::to_string(port) +
                    "))\n"
                    "for _ in range(2):\n"
                    "    d, a = s.recvfrom(64); s.sendto(d.upper(), a)' >/dev/null 2>&1 &"));
  };
  const auto ask = [&](const std::string& ns, const std::string& address, int port) {
    return run_command(in(ns,
                          "timeout 10 python3 -c 'import socket\n"
                          "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5)\n"
                          "for _ in range(10):\n"
                          "    s.sendto(b\"ping\", (\"" +
                              address + "\", " + std::to_string(port) +
                              "))\n"
                              "    try:\n"
                              "        print(s.recv(64).decode()); break\n"
                              "    except socket.timeout:\n"
                              "        pass'"))
        .output;
  };
  echo_server(lan_, "10.1.0.2", 6000);
  echo_server(srv_, "198.51.100.7", 7000);
  EXPECT_EQ(ask(srv_, "198.51.100.1", 6000), "PING\n") << "the port forward did not answer";
  EXPECT_EQ(ask(lan_, "198.51.100.7", 7000), "PING\n") << "the LAN's own flow got no reply";

  const auto packets = [&](const std::string& counter) {
    const std::string text = run_command(in(rt_, "nft list counter inet ulh2_count " + counter)).output;
    const size_t at = text.find("packets ");
    return at == std::string::npos ? -1L : std::stol(text.substr(at + 8));
  };
  EXPECT_GE(packets("answer_marked"), 1) << our_table();
  EXPECT_EQ(packets("answer_unmarked"), 0) << our_table();
  EXPECT_GE(packets("reply_unmarked"), 1);
  EXPECT_EQ(packets("reply_marked"), 0) << "a reply arriving on the uplink was given its mark";
  // 0x10200 from the stand-in on creation; wan0's bits replace the old id, 0x10000 is kept.
  EXPECT_EQ(ct_mark_of("ipv4", 6000), std::optional<uint32_t>(0x10300));
  EXPECT_EQ(ct_mark_of("ipv4", 7000), std::optional<uint32_t>(0x10300));
}

TEST_F(CtMarkTest, InboundRulesListBackAsWritten) {
  CtMarkRules rules(kTable, kMask, {{0x100, "wan"}, {0x200, "wwan0"}, {0x300, ""}});
  const std::string table = our_table();
  EXPECT_NE(table.find("type filter hook prerouting priority dstnat + 1; policy accept;"), std::string::npos)
      << table;
  // Two tests send a LAN flow's packet on: neither new from an uplink nor a reply.
  EXPECT_NE(table.find("ct state new iifname vmap { \"wan\" : goto inbound_0, \"wwan0\" : goto inbound_1 }"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("ct direction reply goto answer"), std::string::npos) << table;
  EXPECT_NE(table.find("chain inbound_0 {\n\t\tct mark set ct mark & 0xffffc1ff | 0x00000100"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("iifname { \"wan\", \"wwan0\" } return"), std::string::npos) << table;
  EXPECT_NE(
      table.find(
          "ct mark & 0x00003f00 == 0x00000200 meta mark set meta mark & 0xffffc2ff | 0x00000200 return"),
      std::string::npos)
      << table;
  EXPECT_EQ(count(table, "ct state new"), 1u) << table;
  EXPECT_EQ(count(table, "ct mark set"), 5u) << table;  // 3 copies + 2 arrivals (none without a device)
}

// wan and wan6 on one device: the device is one vmap key (nft refuses two), and the uplink written
// last tags the device's new connections, as its own rule, evaluated last, did before the vmap.
TEST_F(CtMarkTest, TwoUplinksOnOneDeviceAreOneInboundKey) {
  CtMarkRules rules(kTable, kMask, {{0x100, "wan"}, {0x200, "wan"}});
  const std::string table = our_table();
  EXPECT_NE(table.find("ct state new iifname vmap { \"wan\" : goto inbound_1 }"), std::string::npos) << table;
  EXPECT_NE(table.find("iifname \"wan\" return"), std::string::npos) << table;
}

TEST_F(CtMarkTest, ReplacesAStaleTableOfACrashedRun) {
  must_run(in(rt_, std::string("nft add table inet ") + kTable));
  must_run(in(rt_, std::string("nft add chain inet ") + kTable + " leftover"));
  must_run(in(rt_, std::string("nft add rule inet ") + kTable + " leftover meta mark 0x500 counter"));

  CtMarkRules rules(kTable, kMask, marks({0x100}));
  const std::string table = our_table();
  EXPECT_EQ(table.find("leftover"), std::string::npos) << table;
  EXPECT_EQ(count(table, "ct mark set"), 1u) << table;
}

TEST_F(CtMarkTest, UpdateBringsBackATableSomeoneDeleted) {
  CtMarkRules rules(kTable, kMask, marks({0x100}));
  must_run(in(rt_, std::string("nft delete table inet ") + kTable));
  rules.update(marks({0x100}));
  EXPECT_EQ(count(our_table(), "ct mark set"), 1u);
}

TEST_F(CtMarkTest, RefusesBadInputWithoutInstallingAnything) {
  EXPECT_THROW(CtMarkRules("bad name; flush ruleset", kMask, marks({0x100})), std::invalid_argument);
  EXPECT_THROW(CtMarkRules("", kMask, marks({0x100})), std::invalid_argument);
  EXPECT_THROW(CtMarkRules(kTable, kMask, marks({0})), std::invalid_argument);
  EXPECT_THROW(CtMarkRules(kTable, kMask, marks({0x10100})), std::invalid_argument);
  EXPECT_THROW(CtMarkRules(kTable, 0, marks({0x100})), std::invalid_argument);
  EXPECT_THROW(CtMarkRules(kTable, kMask, {{0x100, "wan\" accept"}}), std::invalid_argument);
  EXPECT_THROW(CtMarkRules(kTable, kMask, {{0x100, "a-name-of-16-byte"}}), std::invalid_argument);
  EXPECT_EQ(nft_tables().find(kTable), std::string::npos);
  EXPECT_NE(nft_tables().find("ulh2_standin"), std::string::npos);
}

TEST_F(CtMarkTest, NftErrorsCarryNftsMessage) {
  try {
    CtMarkRules rules("chain", kMask, marks({0x100}));  // a keyword: nft's parser refuses it
    ADD_FAILURE() << "a table named 'chain' was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("syntax error"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("table inet chain"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace uplinkd::netlink
