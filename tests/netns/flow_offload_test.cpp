// Failover hygiene with software flow offload (issue 5, run by vmtest for issue 6): the router
// forwards through an nft flowtable, so established TCP connections leave the netfilter hooks for
// the flowtable's fast path. At `disconnected` uplinkd must still take them off it (their conntrack
// entries deleted by mark: the flowtable refuses a dying entry) and reset their LAN clients, while
// a connection on another uplink stays offloaded and keeps working.
//
//   client ns  c0 10.1.0.2/24 ── r0 10.1.0.1/24  router ns  r1 10.2.0.1/24 ── s0 10.2.0.2/24  server ns
//
// The router runs uplinkd's real pieces as the daemon uses them: the Datapath with lan_ingress and
// lan_egress on r0, FlowHygiene with its ct mark table, and beside them the flowtable of a
// firewall that offloads every forwarded TCP connection. Needs nf_flow_table, which this host's
// kernel lacks (the test skips here) and Debian's 6.1 and 6.12 kernels have:
//   vmtest/run --kernel 6.12 --suite netns --filter 'FlowOffload*'
//
// The lab is flow_fixture.h's; namespaces are h10fo-<pid>-<n>-{c,r,s}, deleted in TearDown.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "daemon/flow_hygiene.h"
#include "datapath/datapath.h"
#include "flow_fixture.h"
#include "health/monitor.h"
#include "netns_fixture.h"

namespace uplinkd {
namespace {

using uplinkd::testing::client_flow_key;
using uplinkd::testing::exchange_messages;
using uplinkd::testing::must_run;
using uplinkd::testing::run_command;
using uplinkd::testing::wait_until;

constexpr uint32_t kMask = uplinkd::testing::kFlowMask;
constexpr uint32_t kDeadUplink = 1;  // mark 0x100: goes down in the test
constexpr uint32_t kLiveUplink = 2;  // mark 0x200: stays up
constexpr uint16_t kPort = uplinkd::testing::kFlowPort;
constexpr const char* kOffloadTable = "h10_offload";

// A firewall that offloads every forwarded TCP connection (OpenWrt's fw4 `flow_offloading '1'`
// does the same). The counter shows what still takes the slow path: an offloaded connection's
// packets bypass the forward hook.
std::string offload_ruleset() {
  return std::string("table inet ") + kOffloadTable +
         " {\n"
         "  flowtable ft { hook ingress priority 0; devices = { r0, r1 }; }\n"
         "  chain forwarding {\n"
         "    type filter hook forward priority 0; policy accept;\n"
         "    meta l4proto tcp counter flow add @ft\n"
         "  }\n"
         "}\n";
}

// One TCP connection through the router: the client's and the server's ends.
struct Connection {
  int client = -1;
  int server = -1;
  uint16_t client_port = 0;  // host order
};

void set_receive_timeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

class FlowOffloadTest : public testing::FlowRouterTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, BPF, nft, conntrack)";
    if (!datapath::is_bpffs("/sys/fs/bpf"))
      GTEST_SKIP() << "no bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)";
    if (run_command("command -v conntrack").status != 0 || run_command("command -v nft").status != 0)
      GTEST_SKIP() << "needs the conntrack and nft tools (Debian packages conntrack, nftables)";
    ASSERT_NO_FATAL_FAILURE(build_router("h10fo"));
    ASSERT_NO_FATAL_FAILURE(install_flowtable());
    if (IsSkipped()) return;

    start_datapath(testing::flow_lab_config(), kDeadUplink);
    // As the daemon: FlowHygiene owns the ct mark table (the uplink bits of the packet mark copied
    // into the conntrack mark), which the delete by mark needs.
    make_hygiene("h10test_");
  }

  void TearDown() override {
    for (Connection& c : connections_) {
      for (int fd : {c.client, c.server}) {
        if (fd >= 0) close(fd);
      }
    }
    if (listener_ >= 0) close(listener_);
    FlowRouterTest::TearDown();
  }

  // The flowtable needs nf_flow_table: without it (this host's kernel) nft refuses the table and
  // the test skips with nft's own message. The same table without the flowtable must load, so a
  // mistake in the ruleset cannot pass for a missing module.
  void install_flowtable() {
    const std::string plain =
        std::string("table inet ") + kOffloadTable +
        " { chain forwarding { type filter hook forward priority 0; policy accept; }; }\n";
    const auto plain_loaded = nft_file(plain);
    ASSERT_EQ(plain_loaded.status, 0) << "nft refused a plain table: " << plain_loaded.output;
    must_run(std::string("nft delete table inet ") + kOffloadTable);
    const auto loaded = nft_file(offload_ruleset());
    if (loaded.status != 0) {
      GTEST_SKIP() << "nft cannot add a flowtable in this kernel (no nf_flow_table / nft_flow_offload; "
                      "the VM tests run this: vmtest/run --kernel 6.12 --suite netns --filter "
                      "'FlowOffload*'): "
                   << loaded.output;
    }
  }

  // `nft -f -` with `text` in the router namespace (the test thread is there).
  static uplinkd::testing::CommandResult nft_file(const std::string& text) {
    // The ruleset has no single quote; a here-document would not do (run_command appends 2>&1).
    return run_command("printf '%s' '" + text + "' | nft -f -");
  }

  // A new connection client -> server through the router, with one message each way (so
  // lan_egress has seen the server's segments and conntrack has seen the handshake complete).
  Connection& connect_one() {
    if (listener_ < 0) listener_ = open_listener(8);
    Connection& c = connections_.emplace_back();
    int connected = -1;
    c.client = connect_client(&connected);
    EXPECT_EQ(connected, 0) << std::strerror(errno);
    set_receive_timeout(listener_, std::chrono::seconds(5));
    c.server = accept(listener_, nullptr, nullptr);
    EXPECT_GE(c.server, 0) << std::strerror(errno);
    set_receive_timeout(c.client, std::chrono::seconds(5));  // every blocking call is bounded
    set_receive_timeout(c.server, std::chrono::seconds(5));
    sockaddr_in local{};
    socklen_t len = sizeof local;
    getsockname(c.client, reinterpret_cast<sockaddr*>(&local), &len);
    c.client_port = ntohs(local.sin_port);
    EXPECT_TRUE(exchange(c));
    return c;
  }

  // One message each way; true when both arrived.
  static bool exchange(const Connection& c) { return exchange_messages(c.client, c.server); }

  static flow_key key_of(const Connection& c) { return client_flow_key(htons(c.client_port)); }

  // The router's conntrack line of `c` ("" when there is none). conntrack's count line goes to
  // stderr, which run_command merges.
  static std::string conntrack_line(const Connection& c) {
    std::istringstream out(run_command("conntrack -L -p tcp --orig-port-src " +
                                       std::to_string(c.client_port) + " --orig-port-dst " +
                                       std::to_string(kPort))
                               .output);
    std::string line;
    while (std::getline(out, line)) {
      if (line.rfind("tcp ", 0) == 0) return line;
    }
    return "";
  }

  static std::optional<uint32_t> ct_mark_of(const std::string& line) {
    std::smatch m;
    if (!std::regex_search(line, m, std::regex(R"(\bmark=(\d+))"))) return std::nullopt;
    return static_cast<uint32_t>(std::stoul(m[1]));
  }

  static bool offloaded(const std::string& line) { return line.find("[OFFLOAD]") != std::string::npos; }

  // Packets of forwarded TCP that took the slow path (the forward hook) so far.
  static uint64_t slow_path_packets() {
    const std::string out =
        run_command(std::string("nft list chain inet ") + kOffloadTable + " forwarding").output;
    std::smatch m;
    if (!std::regex_search(out, m, std::regex(R"(counter packets (\d+))"))) return UINT64_MAX;
    return std::stoull(m[1]);
  }

  // Waits for `c`'s conntrack entry to be offloaded with `mark` under mmx_mask.
  void expect_offloaded_with_mark(const Connection& c, uint32_t mark) {
    std::string line;
    EXPECT_TRUE(wait_until([&] {
      line = conntrack_line(c);
      return offloaded(line) && (ct_mark_of(line).value_or(0) & kMask) == mark;
    })) << "port "
        << c.client_port << " not offloaded with ct mark " << std::hex << mark << ": '" << line << "'\n"
        << run_command("conntrack -L").output;
    std::printf("[          ] %s\n", line.c_str());
  }

  int listener_ = -1;
  std::deque<Connection> connections_;  // a deque: connect_one's references stay valid
};

TEST_F(FlowOffloadTest, DisconnectedTakesOffloadedFlowsOffTheFastPathAndResetsTheirClients) {
  // Two connections on the uplink that goes down: `idle` only waits for data, `active` sends after
  // the failover. Then the policy moves to the other uplink and `other` is opened there.
  Connection& idle = connect_one();
  Connection& active = connect_one();
  program_classifier(kLiveUplink);
  Connection& other = connect_one();
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(dp_->lookup_flow(key_of(idle)).value_or(flow_value{}).uplink_id, kDeadUplink);
  ASSERT_EQ(dp_->lookup_flow(key_of(active)).value_or(flow_value{}).uplink_id, kDeadUplink);
  ASSERT_EQ(dp_->lookup_flow(key_of(other)).value_or(flow_value{}).uplink_id, kLiveUplink);

  // Offloaded, each with its uplink's mark in the conntrack entry.
  const uint32_t dead_mark = config::mark_for_id(kDeadUplink, kMask);
  const uint32_t live_mark = config::mark_for_id(kLiveUplink, kMask);
  for (const Connection* c : {&idle, &active})
    ASSERT_NO_FATAL_FAILURE(expect_offloaded_with_mark(*c, dead_mark));
  ASSERT_NO_FATAL_FAILURE(expect_offloaded_with_mark(other, live_mark));
  ASSERT_FALSE(HasFailure());

  // The fast path carries them now: data both ways adds nothing to the forward hook's counter, and
  // lan_egress (tc egress, after the flowtable's neigh_xmit) still learns the server's sequence,
  // which the idle client's reset below depends on (a stale one would not reset it).
  const uint64_t slow_before = slow_path_packets();
  for (int i = 0; i < 5; ++i) {
    for (const Connection* c : {&idle, &active, &other}) ASSERT_TRUE(exchange(*c));
  }
  const uint64_t slow_after = slow_path_packets();
  std::printf("[          ] forward-hook TCP packets during 30 offloaded segments: %llu\n",
              static_cast<unsigned long long>(slow_after - slow_before));
  EXPECT_EQ(slow_after, slow_before) << "offloaded packets took the slow path";

  // `active`'s client must get its RST from the datapath, on its next send: without a tcp_seen
  // entry the daemon cannot reset it at `disconnected` (as for a flow lan_egress has not seen).
  ASSERT_TRUE(dp_->delete_tcp_seen(key_of(active)));
  ASSERT_TRUE(dp_->lookup_tcp_seen(key_of(idle)).has_value()) << "lan_egress missed offloaded segments";

  int idle_errno = 0;
  ssize_t idle_got = 0;
  std::chrono::steady_clock::time_point idle_failed_at;
  std::thread reader([&] {
    char buf[16];
    idle_got = recv(idle.client, buf, sizeof buf, 0);  // blocks: the server sends nothing more
    idle_errno = errno;
    idle_failed_at = std::chrono::steady_clock::now();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  // What the daemon does at `disconnected`: bump the generation, write the record, then hygiene.
  const datapath::FlowCounters before = dp_->flow_counters();
  write_uplink(kDeadUplink, UPLINK_STATE_OFFLINE, 1);
  const auto disconnected_at = std::chrono::steady_clock::now();
  hygiene_->on_disconnected(kDeadUplink, dead_mark, 1, health::monotonic_ns());
  hygiene_->finish_scans(health::monotonic_ns());  // the daemon's loop would go on with the scan
  reader.join();
  EXPECT_EQ(idle_got, -1);
  EXPECT_EQ(idle_errno, ECONNRESET) << std::strerror(idle_errno);
  std::printf("[          ] from on_disconnected to the idle client's ECONNRESET: %.2f ms\n",
              std::chrono::duration<double, std::milli>(idle_failed_at - disconnected_at).count());

  // Off the fast path: their conntrack entries are gone (a dying entry is refused by the flowtable).
  // The delete by mark runs on the worker thread.
  ASSERT_TRUE(hygiene_->wait_conntrack_idle(std::chrono::seconds(10)));
  EXPECT_EQ(conntrack_line(idle), "") << run_command("conntrack -L").output;
  EXPECT_EQ(conntrack_line(active), "") << run_command("conntrack -L").output;
  EXPECT_GE(hygiene_->counters_json()["conntrack_deleted"].get<uint64_t>(), 2U)
      << hygiene_->counters_json().dump();

  // The active client's next segment is answered by lan_ingress with a RST and goes no further.
  ASSERT_EQ(send(active.client, "late", 4, MSG_NOSIGNAL), 4) << std::strerror(errno);
  char buf[16];
  errno = 0;
  EXPECT_EQ(recv(active.client, buf, sizeof buf, 0), -1);
  EXPECT_EQ(errno, ECONNRESET) << std::strerror(errno);
  set_receive_timeout(active.server, std::chrono::milliseconds(500));
  errno = 0;
  EXPECT_EQ(recv(active.server, buf, sizeof buf, 0), -1) << "the stale segment reached the server";
  EXPECT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << std::strerror(errno);
  EXPECT_EQ(dp_->flow_counters().stale_tcp_reset, before.stale_tcp_reset + 1);
  EXPECT_FALSE(dp_->lookup_flow(key_of(idle)).has_value());
  EXPECT_FALSE(dp_->lookup_flow(key_of(active)).has_value());
  // Nothing brought them back (no segment of theirs crossed the router since).
  EXPECT_EQ(conntrack_line(idle), "");
  EXPECT_EQ(conntrack_line(active), "");

  // The other uplink's connection is untouched: still offloaded, with its mark, and working.
  EXPECT_TRUE(offloaded(conntrack_line(other))) << conntrack_line(other);
  EXPECT_EQ(ct_mark_of(conntrack_line(other)).value_or(0) & kMask, live_mark);
  const uint64_t slow_other = slow_path_packets();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(exchange(other));
  EXPECT_EQ(slow_path_packets(), slow_other) << "the surviving connection left the fast path";
  EXPECT_EQ(dp_->lookup_flow(key_of(other)).value_or(flow_value{}).uplink_id, kLiveUplink);
}

}  // namespace
}  // namespace uplinkd
