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
// Namespaces are h10fo-<pid>-<n>-{c,r,s}, deleted in TearDown.
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
#include "health/monitor.h"
#include "netns_fixture.h"

namespace uplinkd {
namespace {

using uplinkd::testing::enter_netns;
using uplinkd::testing::must_run;
using uplinkd::testing::run_command;
using uplinkd::testing::wait_until;

constexpr uint32_t kMask = 0x3F00;
constexpr uint32_t kDeadUplink = 1;  // mark 0x100: goes down in the test
constexpr uint32_t kLiveUplink = 2;  // mark 0x200: stays up
constexpr uint32_t kPolicy = 3;
constexpr uint16_t kPort = 5201;
constexpr const char* kOffloadTable = "h10_offload";

const char* const kConfig =
    "config globals 'globals'\n"
    "\toption mmx_mask '0x3F00'\n"
    "config interface 'wan'\n"
    "\toption enabled '1'\n"
    "\toption device 'r1'\n"
    "\toption gateway '10.2.0.2'\n"
    "config interface 'wan2'\n"
    "\toption enabled '1'\n"
    "\toption device 'r1'\n"
    "\toption gateway '10.2.0.2'\n"
    "config member 'wan_m1'\n"
    "\toption interface 'wan'\n"
    "\toption metric '1'\n"
    "config member 'wan2_m2'\n"
    "\toption interface 'wan2'\n"
    "\toption metric '2'\n"
    "config policy 'failover'\n"
    "\tlist use_member 'wan_m1'\n"
    "\tlist use_member 'wan2_m2'\n"
    "config rule 'all'\n"
    "\toption use_policy 'failover'\n";

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

// Runs `fn` with the calling thread inside namespace `ns`, then returns to `back`.
template <typename Fn>
auto in_netns(const std::string& ns, int back, Fn fn) {
  EXPECT_EQ(enter_netns("/run/netns/" + ns), 0);
  auto result = fn();
  setns(back, CLONE_NEWNET);
  return result;
}

void set_receive_timeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

class FlowOffloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, BPF, nft, conntrack)";
    if (!datapath::is_bpffs("/sys/fs/bpf"))
      GTEST_SKIP() << "no bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)";
    if (run_command("command -v conntrack").status != 0 || run_command("command -v nft").status != 0)
      GTEST_SKIP() << "needs the conntrack and nft tools (Debian packages conntrack, nftables)";
    static int counter = 0;
    base_ = "h10fo-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    original_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(original_, 0);
    ASSERT_NO_FATAL_FAILURE(build_topology());
    ASSERT_EQ(enter_netns("/run/netns/" + router_ns()), 0);
    ASSERT_TRUE(wait_until([] { return run_command("ping -c1 -W1 10.1.0.2").status == 0; }));
    ASSERT_TRUE(wait_until([] { return run_command("ping -c1 -W1 10.2.0.2").status == 0; }));
    ASSERT_NO_FATAL_FAILURE(install_flowtable());
    if (IsSkipped()) return;

    config_ = config::parse(kConfig, "mwan3");
    dp_ = std::make_unique<datapath::Datapath>("/sys/fs/bpf", base_, [](const probe_reply_event&) {});
    program_classifier(kDeadUplink);
    dp_->attach_lan(static_cast<int>(if_nametoindex("r0")), "r0", false);
    // As the daemon: FlowHygiene owns the ct mark table (the uplink bits of the packet mark copied
    // into the conntrack mark), which the delete by mark needs.
    hygiene_ = std::make_unique<FlowHygiene>(config_, *dp_,
                                             FlowHygiene::Options{"h10test_" + std::to_string(getpid())});
  }

  void TearDown() override {
    hygiene_.reset();
    dp_.reset();
    for (Connection& c : connections_) {
      for (int fd : {c.client, c.server}) {
        if (fd >= 0) close(fd);
      }
    }
    if (listener_ >= 0) close(listener_);
    if (original_ >= 0) {
      setns(original_, CLONE_NEWNET);
      close(original_);
    }
    for (const auto& ns : made_) EXPECT_EQ(run_command("ip netns del " + ns).status, 0) << ns;
  }

  std::string client_ns() const { return base_ + "-c"; }
  std::string router_ns() const { return base_ + "-r"; }
  std::string server_ns() const { return base_ + "-s"; }

  void build_topology() {
    for (const char* s : {"-c", "-r", "-s"}) {
      ASSERT_EQ(run_command("ip netns add " + base_ + s).status, 0) << "ip netns add " << base_ << s;
      made_.push_back(base_ + s);
      must_run("ip -n " + base_ + s + " link set lo up");
    }
    const std::string c = client_ns(), r = router_ns(), s = server_ns();
    must_run("ip -n " + r + " link add r0 type veth peer name c0 netns " + c);
    must_run("ip -n " + r + " link add r1 type veth peer name s0 netns " + s);
    must_run("ip -n " + c + " addr add 10.1.0.2/24 dev c0");
    must_run("ip -n " + r + " addr add 10.1.0.1/24 dev r0");
    must_run("ip -n " + r + " addr add 10.2.0.1/24 dev r1");
    must_run("ip -n " + s + " addr add 10.2.0.2/24 dev s0");
    for (const auto& [ns, dev] : {std::pair{c, "c0"}, {r, "r0"}, {r, "r1"}, {s, "s0"}}) {
      must_run("ip -n " + ns + " link set " + dev + " up");
    }
    must_run("ip -n " + c + " route add default via 10.1.0.1");
    must_run("ip -n " + s + " route add default via 10.2.0.1");
    must_run("ip netns exec " + r + " sysctl -qw net.ipv4.ip_forward=1");
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

  // Every uplink online on r1 (so only their flows' generations matter); one rule sending
  // everything to a policy whose only member is `id`.
  void program_classifier(uint32_t id) {
    write_uplink(id, UPLINK_STATE_ONLINE, 0);
    classifier_cfg c{};
    c.mmx_mask = kMask;
    c.n_rules = 1;
    c.default_mark = kMask;
    c.flow_timeout_tcp_s = 7440;
    c.flow_timeout_udp_s = 180;
    c.flow_timeout_s = 600;
    c.flags = UPLINKD_CFG_RESET_STALE_TCP;
    dp_->write_classifier_cfg(c);
    rule_entry rule{};
    rule.policy_id = kPolicy;
    dp_->write_rule(0, rule);
    policy_entry p{};
    p.n_members = 1;
    p.threshold[0] = 0xFFFFFFFF;
    p.mark[0] = config::mark_for_id(id, kMask);
    p.uplink_id[0] = static_cast<uint16_t>(id);
    dp_->write_policy(UPLINKD_POLICY_SLOT(kPolicy, 4), p);
  }

  void write_uplink(uint32_t id, uint32_t state, uint32_t generation) {
    uplink_record u{};
    u.ifindex = if_nametoindex("r1");
    u.state = state;
    u.generation = generation;
    u.mark = config::mark_for_id(id, kMask);
    dp_->write_uplink(id, u);
  }

  // A new connection client -> server through the router, with one message each way (so
  // lan_egress has seen the server's segments and conntrack has seen the handshake complete).
  Connection& connect_one() {
    const int here = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (listener_ < 0) {
      listener_ = in_netns(server_ns(), here, [] {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(kPort);
        bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
        listen(fd, 8);
        return fd;
      });
    }
    Connection& c = connections_.emplace_back();
    c.client = in_netns(client_ns(), here, [] { return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); });
    close(here);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(kPort);
    inet_pton(AF_INET, "10.2.0.2", &to.sin_addr);
    EXPECT_EQ(connect(c.client, reinterpret_cast<sockaddr*>(&to), sizeof to), 0) << std::strerror(errno);
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
  static bool exchange(const Connection& c) {
    char buf[64];
    if (send(c.client, "ping", 4, MSG_NOSIGNAL) != 4) return false;
    if (recv(c.server, buf, sizeof buf, 0) != 4) return false;
    if (send(c.server, "pong!", 5, MSG_NOSIGNAL) != 5) return false;
    return recv(c.client, buf, sizeof buf, 0) == 5;
  }

  static flow_key key_of(const Connection& c) {
    flow_key k{};
    inet_pton(AF_INET, "10.1.0.2", k.saddr);
    inet_pton(AF_INET, "10.2.0.2", k.daddr);
    k.sport = htons(c.client_port);
    k.dport = htons(kPort);
    k.proto = IPPROTO_TCP;
    k.family = 4;
    return k;
  }

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

  std::string base_;
  int original_ = -1;
  std::vector<std::string> made_;
  config::Config config_;
  std::unique_ptr<datapath::Datapath> dp_;
  std::unique_ptr<FlowHygiene> hygiene_;
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
  reader.join();
  EXPECT_EQ(idle_got, -1);
  EXPECT_EQ(idle_errno, ECONNRESET) << std::strerror(idle_errno);
  std::printf("[          ] from on_disconnected to the idle client's ECONNRESET: %.2f ms\n",
              std::chrono::duration<double, std::milli>(idle_failed_at - disconnected_at).count());

  // Off the fast path: their conntrack entries are gone (a dying entry is refused by the flowtable).
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
