// The router lab the flow tests share (FlowHygieneTest, FlowOffloadTest): a client namespace
// connects through a router namespace to a server namespace, and the router runs uplinkd's real
// Datapath (lan_ingress and lan_egress on r0) with two uplinks on r1 and, when a test asks,
// FlowHygiene.
//
//   client ns  c0 10.1.0.2/24 ── r0 10.1.0.1/24  router ns  r1 10.2.0.1/24 ── s0 10.2.0.2/24  server ns
//
// Namespaces are <prefix>-<pid>-<n>-{c,r,s}; the test thread lives in the router namespace from
// SetUp to TearDown, which deletes the namespaces.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "daemon/flow_hygiene.h"
#include "datapath/datapath.h"
#include "netns_fixture.h"
#include "policy/rule_tables.h"

namespace uplinkd::testing {

constexpr uint32_t kFlowMask = 0x3F00;
constexpr uint32_t kFlowPolicy = 3;
constexpr uint16_t kFlowPort = 5201;  // the server's listening port

// mwan3 config of the lab: wan (metric 1) and wan2 (metric 2), both on r1, in one policy that every
// flow uses. `policy_options` adds lines to that policy (e.g. "\toption failback 'move'\n").
inline std::string flow_lab_config(const std::string& policy_options = "") {
  return "config globals 'globals'\n"
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
         "\tlist use_member 'wan2_m2'\n" +
         policy_options +
         "config rule 'all'\n"
         "\toption use_policy 'failover'\n";
}

// Runs `fn` with the calling thread inside namespace `ns`, then returns to `back`.
template <typename Fn>
auto in_netns(const std::string& ns, int back, Fn fn) {
  EXPECT_EQ(enter_netns("/run/netns/" + ns), 0);
  auto result = fn();
  setns(back, CLONE_NEWNET);
  return result;
}

// One message each way on a connected pair; true when both arrived.
inline bool exchange_messages(int client, int server) {
  char buf[64];
  if (send(client, "ping", 4, MSG_NOSIGNAL) != 4) return false;
  if (recv(server, buf, sizeof buf, 0) != 4) return false;
  if (send(server, "pong!", 5, MSG_NOSIGNAL) != 5) return false;
  return recv(client, buf, sizeof buf, 0) == 5;
}

// The flows key of the client's TCP connection from `client_port` (network order) to the server.
inline flow_key client_flow_key(uint16_t client_port) {
  flow_key k{};
  inet_pton(AF_INET, "10.1.0.2", k.saddr);
  inet_pton(AF_INET, "10.2.0.2", k.daddr);
  k.sport = client_port;
  k.dport = htons(kFlowPort);
  k.proto = IPPROTO_TCP;
  k.family = 4;
  return k;
}

class FlowRouterTest : public ::testing::Test {
 protected:
  // Makes the three namespaces and their links, moves this thread into the router and waits
  // until it reaches both ends.
  void build_router(const std::string& prefix) {
    static int counter = 0;
    base_ = prefix + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    original_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(original_, 0);
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
    ASSERT_EQ(enter_netns("/run/netns/" + r), 0);
    ASSERT_TRUE(wait_until([] { return run_command("ping -c1 -W1 10.1.0.2").status == 0; }));
    ASSERT_TRUE(wait_until([] { return run_command("ping -c1 -W1 10.2.0.2").status == 0; }));
  }

  // The Datapath pinned under this test's name, classifying r0's traffic to uplink `id`.
  void start_datapath(const std::string& config_text, uint32_t id) {
    config_ = config::parse(config_text, "mwan3");
    dp_ = std::make_unique<datapath::Datapath>("/sys/fs/bpf", base_, [](const probe_reply_event&) {});
    program_classifier(id);
    dp_->attach_lan(static_cast<int>(if_nametoindex("r0")), "r0", false);
  }

  // FlowHygiene as the daemon runs it (it owns the ct mark table); `table_prefix` names its nft table.
  void make_hygiene(const std::string& table_prefix) {
    hygiene_ = std::make_unique<FlowHygiene>(config_, *dp_,
                                             FlowHygiene::Options{table_prefix + std::to_string(getpid())});
  }

  // Derived fixtures close their sockets first, then call this.
  void TearDown() override {
    hygiene_.reset();
    dp_.reset();
    if (original_ >= 0) {
      setns(original_, CLONE_NEWNET);
      close(original_);
    }
    for (const auto& ns : made_) EXPECT_EQ(run_command("ip netns del " + ns).status, 0) << ns;
  }

  std::string client_ns() const { return base_ + "-c"; }
  std::string router_ns() const { return base_ + "-r"; }
  std::string server_ns() const { return base_ + "-s"; }

  // Uplink `id` online on r1 (so only its flows' generations matter); one rule sending everything
  // to a policy whose only member is `id`.
  void program_classifier(uint32_t id) {
    write_uplink(id, UPLINK_STATE_ONLINE, 0);
    classifier_cfg c{};
    c.mmx_mask = kFlowMask;
    c.n_rules = 1;
    c.default_mark = kFlowMask;
    c.flow_timeout_tcp_s = 7440;
    c.flow_timeout_udp_s = 180;
    c.flow_timeout_s = 600;
    c.flags = UPLINKD_CFG_RESET_STALE_TCP;
    dp_->write_classifier_cfg(c);
    rule_entry rule{};
    rule.policy_id = kFlowPolicy;
    dp_->write_rules({rule}, policy::compile_rule_tables({rule}));
    policy_entry p{};
    p.n_members = 1;
    p.threshold[0] = 0xFFFFFFFF;
    p.mark[0] = config::mark_for_id(id, kFlowMask);
    p.uplink_id[0] = static_cast<uint16_t>(id);
    dp_->write_policy(UPLINKD_POLICY_SLOT(kFlowPolicy, 4), p);
  }

  void write_uplink(uint32_t id, uint32_t state, uint32_t generation) {
    uplink_record u{};
    u.ifindex = if_nametoindex("r1");
    u.state = state;
    u.generation = generation;
    u.mark = config::mark_for_id(id, kFlowMask);
    dp_->write_uplink(id, u);
  }

  // A listening TCP socket on the server's kFlowPort, opened in the server namespace.
  int open_listener(int backlog) {
    const int here = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    const int fd = in_netns(server_ns(), here, [backlog] {
      int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(kFlowPort);
      bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
      listen(s, backlog);
      return s;
    });
    close(here);
    return fd;
  }

  // A TCP socket of the client namespace, connected to the server (the errno of a failed
  // connect is left for the caller).
  int connect_client(int* connect_result) {
    const int here = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    const int fd = in_netns(client_ns(), here, [] { return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); });
    close(here);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(kFlowPort);
    inet_pton(AF_INET, "10.2.0.2", &to.sin_addr);
    *connect_result = connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to);
    return fd;
  }

  std::string base_;
  int original_ = -1;
  std::vector<std::string> made_;
  config::Config config_;
  std::unique_ptr<datapath::Datapath> dp_;
  std::unique_ptr<FlowHygiene> hygiene_;
};

}  // namespace uplinkd::testing
