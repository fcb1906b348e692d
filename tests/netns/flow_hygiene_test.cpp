// FlowHygiene against real TCP sockets: a client namespace connects through a router namespace
// (running only the LAN classifier, lan_egress and FlowHygiene) to a server namespace. The client's
// own kernel is the witness: a proactive RST with the learnt sequence number makes its blocked
// recv() fail with ECONNRESET; RSTs with a wrong sequence number leave it connected.
//
//   client ns  c0 10.1.0.2/24 ── r0 10.1.0.1/24  router ns  r1 10.2.0.1/24 ── s0 10.2.0.2/24  server ns
//
// The lab is flow_fixture.h's; namespaces are h3fh-<pid>-<n>-{c,r,s}, deleted in TearDown.
#include "daemon/flow_hygiene.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "config/config.h"
#include "datapath/datapath.h"
#include "flow_fixture.h"
#include "health/monitor.h"
#include "netns_fixture.h"

namespace uplinkd {
namespace {

using uplinkd::testing::must_run;
using uplinkd::testing::run_command;
using uplinkd::testing::wait_until;

constexpr uint32_t kUplink = 1;
constexpr uint32_t kMark = 0x100;
constexpr uint16_t kPort = uplinkd::testing::kFlowPort;

class FlowHygieneTest : public testing::FlowRouterTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (namespaces, BPF, packet sockets)";
    if (!datapath::is_bpffs("/sys/fs/bpf"))
      GTEST_SKIP() << "no bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)";
    ASSERT_NO_FATAL_FAILURE(build_router("h3fh"));
    start_datapath(testing::flow_lab_config("\toption failback 'move'\n"), kUplink);
  }

  void TearDown() override {
    for (int fd : {client_, server_, listener_}) {
      if (fd >= 0) close(fd);
    }
    FlowRouterTest::TearDown();
  }

  // Uplink `id` (wan by default) written with `state` and `generation`.
  void write_uplink(uint32_t state, uint32_t generation, uint32_t id = kUplink) {
    FlowRouterTest::write_uplink(id, state, generation);
  }

  // A connected pair: client_ (in the client ns) to server_ (accepted in the server ns), with data
  // both ways so lan_egress has seen the server's segments.
  void connect_pair() {
    listener_ = open_listener(4);
    int connected = -1;
    client_ = connect_client(&connected);
    ASSERT_EQ(connected, 0) << std::strerror(errno);
    server_ = accept(listener_, nullptr, nullptr);
    ASSERT_GE(server_, 0);
    timeval tv{5, 0};  // every blocking call below is bounded
    setsockopt(client_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(server_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    exchange();
  }

  // One message each way; true when both arrived.
  bool exchange() { return testing::exchange_messages(client_, server_); }

  flow_key client_key() const {
    sockaddr_in local{};
    socklen_t len = sizeof local;
    getsockname(client_, reinterpret_cast<sockaddr*>(&local), &len);
    return testing::client_flow_key(local.sin_port);
  }

  void make_hygiene(bool reset = true) {
    config_.globals.reset_stale_tcp = reset;
    FlowRouterTest::make_hygiene("h3test_");
  }

  int listener_ = -1, client_ = -1, server_ = -1;
};

TEST_F(FlowHygieneTest, LanEgressLearnsTheClientsNextSequence) {
  ASSERT_NO_FATAL_FAILURE(connect_pair());
  const flow_key key = client_key();
  const auto flow = dp_->lookup_flow(key);
  ASSERT_TRUE(flow.has_value()) << "lan_ingress did not record the client's flow";
  EXPECT_EQ(flow->uplink_id, kUplink);
  EXPECT_EQ(flow->mark, kMark);
  const auto seen = dp_->lookup_tcp_seen(key);
  ASSERT_TRUE(seen.has_value()) << "lan_egress did not record the server's segments";
  EXPECT_EQ(seen->ifindex, if_nametoindex("r0"));
  EXPECT_EQ(seen->l3_only, 0);
  // That the sequence number is the client's RCV.NXT is proven by the client itself below.
}

TEST_F(FlowHygieneTest, WrongSequenceRstsLeaveTheClientConnected) {
  ASSERT_NO_FATAL_FAILURE(connect_pair());
  const flow_key key = client_key();
  const auto seen = dp_->lookup_tcp_seen(key);
  ASSERT_TRUE(seen.has_value());
  ResetSender sender;
  // In window but not RCV.NXT (RFC 5961: a challenge ACK), and far out of the window (dropped).
  for (uint32_t offset : {1U, 100U, 0x40000000U, 0x80000000U}) {
    tcp_seen wrong = *seen;
    wrong.next_seq = seen->next_seq + offset;
    ASSERT_EQ(sender.send(build_client_reset(key, wrong), wrong, AF_INET), 0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(exchange()) << "a RST with a wrong sequence number reset the client: " << std::strerror(errno);
  EXPECT_TRUE(exchange());
}

TEST_F(FlowHygieneTest, ProactiveResetFailsTheBlockedRecvWithEconnreset) {
  ASSERT_NO_FATAL_FAILURE(make_hygiene());
  ASSERT_NO_FATAL_FAILURE(connect_pair());
  const flow_key key = client_key();
  ASSERT_TRUE(dp_->lookup_tcp_seen(key).has_value());

  int recv_errno = 0;
  ssize_t got = 0;
  std::chrono::steady_clock::time_point failed_at;
  std::thread reader([&] {
    char buf[16];
    got = recv(client_, buf, sizeof buf, 0);  // blocks: the server sends nothing more
    recv_errno = errno;
    failed_at = std::chrono::steady_clock::now();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // What the daemon does at `disconnected`: bump the generation, write the record, then hygiene.
  write_uplink(UPLINK_STATE_OFFLINE, 1);
  const auto reset_at = std::chrono::steady_clock::now();
  hygiene_->on_disconnected(kUplink, kMark, 1, health::monotonic_ns());
  // The daemon's loop goes on with the scan where the first slice (3 ms) did not finish it: under
  // a VM's software emulation one batch read can take longer than that.
  hygiene_->finish_scans(health::monotonic_ns());
  reader.join();
  EXPECT_EQ(got, -1);
  EXPECT_EQ(recv_errno, ECONNRESET) << std::strerror(recv_errno);
  const auto ms =
      std::chrono::duration_cast<std::chrono::microseconds>(failed_at - reset_at).count() / 1000.0;
  std::printf("[          ] from on_disconnected to the client's ECONNRESET: %.2f ms\n", ms);
  EXPECT_LT(ms, 200.0);

  EXPECT_FALSE(dp_->lookup_flow(key).has_value()) << "the reset flow's entry stayed";
  EXPECT_FALSE(dp_->lookup_tcp_seen(key).has_value()) << "the reset flow's tcp_seen entry stayed";
  const auto j = hygiene_->counters_json();
  EXPECT_EQ(j["stale_resets"]["proactive"], 1U) << j.dump();
  EXPECT_EQ(j["interfaces"][0]["proactive_resets"], 1U) << j.dump();
  const std::string text = format_flows(j);
  EXPECT_NE(text.find(" stale TCP resets: 0 active, 1 proactive, 0 refused\n"), std::string::npos) << text;
  EXPECT_NE(text.find(" wan: tracked 0, proactive resets 1, conntrack deleted "), std::string::npos) << text;
  std::printf("%s", text.c_str());
  // The server is untouched by uplinkd (it would hear of it from the remote side only).
  EXPECT_EQ(send(server_, "x", 1, MSG_NOSIGNAL), 1);
}

TEST_F(FlowHygieneTest, ConntrackEntriesOfTheDeadMarkGoOthersStay) {
  ASSERT_NO_FATAL_FAILURE(make_hygiene());
  ASSERT_NO_FATAL_FAILURE(connect_pair());
  // The ct mark table copies the packet's uplink mark into the entry; the next packets carry it.
  ASSERT_TRUE(exchange());
  auto entries = [](const std::string& mark) {
    return run_command("conntrack -L -m " + mark +
                       "/0x3f00 2>/dev/null | grep -c dport=" + std::to_string(kPort))
        .output;
  };
  ASSERT_TRUE(wait_until([&] { return entries("0x100").rfind("1", 0) == 0; }))
      << run_command("conntrack -L").output;
  // An unmarked entry (the router's own connection to the server) must survive.
  must_run(
      "conntrack -I -p tcp -s 10.2.0.1 -d 10.2.0.2 --sport 40000 --dport 22 --state ESTABLISHED -t 60 -u "
      "SEEN_REPLY");
  write_uplink(UPLINK_STATE_OFFLINE, 1);
  hygiene_->on_disconnected(kUplink, kMark, 1, health::monotonic_ns());
  // The delete runs on the worker thread; on_disconnected does not wait for it.
  ASSERT_TRUE(hygiene_->wait_conntrack_idle(std::chrono::seconds(10)));
  EXPECT_EQ(entries("0x100").rfind("0", 0), 0U) << run_command("conntrack -L").output;
  EXPECT_NE(run_command("conntrack -L -p tcp --dport 22").output.find("sport=40000"), std::string::npos);
  const auto j = hygiene_->counters_json();
  EXPECT_GE(j["conntrack_deleted"].get<uint64_t>(), 1U) << j.dump();
  EXPECT_GE(j["interfaces"][0]["conntrack_deleted"].get<uint64_t>(), 1U) << j.dump();
  EXPECT_EQ(j["conntrack_pending"], 0U) << j.dump();
}

// mwan3's `list flush_conntrack 'ifdown'`: uplinkd deletes that uplink's entries by mark (not the
// whole table) when the event comes; events not listed delete nothing.
TEST_F(FlowHygieneTest, FlushConntrackEventDeletesOnlyThatUplinksEntries) {
  config_.interfaces[0].flush_conntrack = {"ifdown"};
  ASSERT_NO_FATAL_FAILURE(make_hygiene());
  ASSERT_NO_FATAL_FAILURE(connect_pair());
  ASSERT_TRUE(exchange());
  auto marked = [] {
    return run_command("conntrack -L -m 0x100/0x3f00 2>/dev/null | grep -c dport=" + std::to_string(kPort))
        .output;
  };
  ASSERT_TRUE(wait_until([&] { return marked().rfind("1", 0) == 0; })) << run_command("conntrack -L").output;
  // The connection stays open here, so a delayed ACK of the exchange can pass after the delete and,
  // by conntrack's mid-stream pickup, make a new entry with the same mark. That is right on a router
  // but would make this count race; only the entries that existed at the event are the subject.
  must_run("sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0");
  must_run("conntrack -I -p udp -s 10.2.0.1 -d 10.2.0.2 --sport 40001 --dport 53 -t 60");

  hygiene_->on_event(kUplink, kMark, "ifup");  // not listed
  ASSERT_TRUE(hygiene_->wait_conntrack_idle(std::chrono::seconds(10)));
  EXPECT_EQ(marked().rfind("1", 0), 0U) << "an event not in flush_conntrack deleted entries";

  hygiene_->on_event(kUplink, kMark, "ifdown");
  ASSERT_TRUE(hygiene_->wait_conntrack_idle(std::chrono::seconds(10)));
  EXPECT_EQ(marked().rfind("0", 0), 0U) << run_command("conntrack -L").output;
  EXPECT_NE(run_command("conntrack -L -p udp --dport 53").output.find("sport=40001"), std::string::npos)
      << "an unmarked entry was deleted";
}

TEST_F(FlowHygieneTest, ResetsOffLeaveTheClientAlone) {
  ASSERT_NO_FATAL_FAILURE(make_hygiene(false));
  ASSERT_NO_FATAL_FAILURE(connect_pair());
  write_uplink(UPLINK_STATE_OFFLINE, 1);
  hygiene_->on_disconnected(kUplink, kMark, 1, health::monotonic_ns());
  EXPECT_TRUE(dp_->lookup_flow(client_key()).has_value());
  EXPECT_EQ(hygiene_->counters_json()["stale_resets"]["proactive"], 0U);
}

// The backup (wan2) carries a connection; the preferred wan comes back and the policy says
// failback 'move': the flow is made stale, its client reset, its conntrack entry deleted by tuple.
TEST_F(FlowHygieneTest, FailbackMoveResetsTheBackupsFlows) {
  program_classifier(2);  // only wan2 online: the policy's flows go by uplink 2
  ASSERT_NO_FATAL_FAILURE(make_hygiene());
  ASSERT_NO_FATAL_FAILURE(connect_pair());
  const flow_key key = client_key();
  ASSERT_TRUE(dp_->lookup_flow(key).has_value());
  ASSERT_EQ(dp_->lookup_flow(key)->uplink_id, 2);
  ASSERT_TRUE(uplinkd::testing::wait_until([&] {
    return run_command("conntrack -L -p tcp --dport " + std::to_string(kPort) + " 2>/dev/null")
               .output.find("10.1.0.2") != std::string::npos;
  }));
  int recv_errno = 0;
  std::thread reader([&] {
    char buf[16];
    recv(client_, buf, sizeof buf, 0);
    recv_errno = errno;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  write_uplink(UPLINK_STATE_ONLINE, 0, kUplink);  // wan is back
  hygiene_->on_connected(kUplink, {"wan", "wan2"}, health::monotonic_ns());
  // The daemon's loop goes on with the move in its next turns: under emulation (the VM suites) the
  // first slice's 3 ms can pass in reading the flow table before the flow is moved.
  hygiene_->finish_scans(health::monotonic_ns());
  reader.join();
  EXPECT_EQ(recv_errno, ECONNRESET) << std::strerror(recv_errno);
  EXPECT_FALSE(dp_->lookup_flow(key).has_value());
  EXPECT_EQ(run_command("conntrack -L -p tcp --dport " + std::to_string(kPort) + " 2>/dev/null")
                .output.find("10.1.0.2"),
            std::string::npos);
  const auto j = hygiene_->counters_json();
  EXPECT_EQ(j["failback_moved"], 1U) << j.dump();
  EXPECT_EQ(j["stale_resets"]["proactive"], 1U) << j.dump();
  // A policy that keeps (the default) moves nothing: wan2 coming back moves nothing either, as it is
  // not the better member.
  hygiene_->on_connected(2, {"wan", "wan2"}, health::monotonic_ns());
  hygiene_->finish_scans(health::monotonic_ns());
  EXPECT_EQ(hygiene_->counters_json()["failback_moved"], 1U);
}

// A failback 'move' over many flows goes on in the loop's slices like the stale-flow scan: the
// backup (wan2) carries 20,000 UDP flows of the moving policy's rule; wan comes back. on_connected()
// does one slice and returns, continue_scans() does the rest, and every flow is made stale once.
TEST_F(FlowHygieneTest, FailbackMoveOfManyFlowsGoesOnInSlices) {
  ASSERT_NO_FATAL_FAILURE(make_hygiene());
  const int fd = bpf_obj_get((dp_->pin_dir() + "/" UPLINKD_MAP_FLOWS).c_str());
  ASSERT_GE(fd, 0);
  constexpr uint32_t kFlows = 20000;
  constexpr uint32_t kBackupGeneration = 7;
  std::vector<flow_key> keys;
  keys.reserve(kFlows);
  for (uint32_t i = 0; i < kFlows; ++i) {
    flow_key k{};
    k.saddr[0] = 10;
    k.saddr[1] = 1;
    std::memcpy(&k.saddr[2], &i, 2);
    k.daddr[0] = 10;
    k.daddr[1] = 2;
    k.sport = static_cast<uint16_t>(1024 + i % 60000);
    k.dport = htons(53);
    k.proto = IPPROTO_UDP;
    k.family = 4;
    flow_value v{};
    v.last_seen_ns = static_cast<uint64_t>(health::monotonic_ns());
    v.uplink_id = 2;
    v.generation = kBackupGeneration;
    v.origin = FLOW_ORIGIN_RULE;
    v.rule_id = 1;
    ASSERT_EQ(bpf_map_update_elem(fd, &k, &v, BPF_ANY), 0);
    keys.push_back(k);
  }
  close(fd);
  write_uplink(UPLINK_STATE_ONLINE, 0, kUplink);  // wan is back
  hygiene_->on_connected(kUplink, {"wan", "wan2"}, health::monotonic_ns());
  ASSERT_TRUE(hygiene_->scanning()) << "20,000 moves are more than one slice does";
  EXPECT_EQ(hygiene_->counters_json()["failback_moved"], 0U) << "counted when the move ends";
  int slices = 1;
  while (hygiene_->scanning() && slices < 100000) {
    hygiene_->continue_scans(health::monotonic_ns(), FlowHygiene::kScanSliceNs);
    ++slices;
  }
  EXPECT_FALSE(hygiene_->scanning());
  std::printf("[          ] %u flows moved back in %d slices\n", kFlows, slices);
  EXPECT_EQ(hygiene_->counters_json()["failback_moved"], kFlows);
  size_t stale = 0;
  for (const auto& k : keys) {
    const auto v = dp_->lookup_flow(k);
    if (v && v->generation == kBackupGeneration - 1) ++stale;
  }
  EXPECT_EQ(stale, kFlows) << "every flow's generation is one its uplink never has again";
}

// wan goes down again before its failback move has ended: the move stops (its flows stay on wan2).
TEST_F(FlowHygieneTest, FailbackMoveEndsWhenTheUplinkGoesDownAgain) {
  ASSERT_NO_FATAL_FAILURE(make_hygiene());
  const int fd = bpf_obj_get((dp_->pin_dir() + "/" UPLINKD_MAP_FLOWS).c_str());
  ASSERT_GE(fd, 0);
  constexpr uint32_t kFlows = 20000;
  for (uint32_t i = 0; i < kFlows; ++i) {
    flow_key k{};
    k.saddr[0] = 10;
    k.saddr[1] = 1;
    std::memcpy(&k.saddr[2], &i, 2);
    k.dport = htons(53);
    k.proto = IPPROTO_UDP;
    k.family = 4;
    flow_value v{};
    v.uplink_id = 2;
    v.generation = 7;
    v.origin = FLOW_ORIGIN_RULE;
    v.rule_id = 1;
    ASSERT_EQ(bpf_map_update_elem(fd, &k, &v, BPF_ANY), 0);
  }
  close(fd);
  write_uplink(UPLINK_STATE_ONLINE, 0, kUplink);
  hygiene_->on_connected(kUplink, {"wan", "wan2"}, health::monotonic_ns());
  ASSERT_TRUE(hygiene_->scanning());
  write_uplink(UPLINK_STATE_OFFLINE, 1);
  hygiene_->on_disconnected(kUplink, kMark, 1, health::monotonic_ns());
  hygiene_->finish_scans(health::monotonic_ns());
  EXPECT_FALSE(hygiene_->scanning());
  EXPECT_LT(hygiene_->counters_json()["failback_moved"].get<uint64_t>(), kFlows);
}

// At `disconnected` the stale-flow scan reads `flows` a batch at a time: on_disconnected() does one
// slice and returns, the loop's continue_scans() does the rest, and every idle client is reset once.
TEST_F(FlowHygieneTest, StaleScanOfManyFlowsGoesOnInSlicesUntilEveryClientIsReset) {
  ASSERT_NO_FATAL_FAILURE(make_hygiene());
  const int fd = bpf_obj_get((dp_->pin_dir() + "/" UPLINKD_MAP_FLOWS).c_str());
  const int seen_fd = bpf_obj_get((dp_->pin_dir() + "/" UPLINKD_MAP_TCP_SEEN).c_str());
  ASSERT_GE(fd, 0);
  ASSERT_GE(seen_fd, 0);
  constexpr uint32_t kFlows = 100000;
  uint32_t fresh = 0;
  const uint64_t now = static_cast<uint64_t>(health::monotonic_ns());
  for (uint32_t i = 0; i < kFlows; ++i) {
    flow_key k{};
    k.saddr[0] = 10;
    std::memcpy(&k.saddr[1], &i, 3);
    k.daddr[0] = 10;
    k.daddr[1] = 2;
    k.sport = static_cast<uint16_t>(i);
    k.dport = htons(443);
    k.proto = IPPROTO_TCP;
    k.family = 4;
    flow_value v{};
    v.last_seen_ns = now;
    v.uplink_id = kUplink;
    v.mark = kMark;
    v.origin = FLOW_ORIGIN_RULE;
    v.rule_id = 1;
    ASSERT_EQ(bpf_map_update_elem(fd, &k, &v, BPF_ANY), 0);
    if (i % 4 != 0) continue;  // a quarter are idle clients the remote has sent to
    tcp_seen ts{};
    ts.last_seen_ns = now;
    ts.ifindex = if_nametoindex("r0");
    ASSERT_EQ(bpf_map_update_elem(seen_fd, &k, &ts, BPF_ANY), 0);
    ++fresh;
  }
  close(fd);
  close(seen_fd);
  write_uplink(UPLINK_STATE_OFFLINE, 1);
  const auto t0 = std::chrono::steady_clock::now();
  hygiene_->on_disconnected(kUplink, kMark, 1, health::monotonic_ns());
  const double first_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(hygiene_->scanning()) << "100,000 flows are more than one slice reads";
  EXPECT_EQ(hygiene_->counters_json()["stale_resets"]["proactive"], 0U) << "counted when the scan ends";
  int slices = 1;
  double longest_ms = first_ms;
  while (hygiene_->scanning() && slices < 100000) {
    const auto s0 = std::chrono::steady_clock::now();
    hygiene_->continue_scans(health::monotonic_ns(), FlowHygiene::kScanSliceNs);
    longest_ms = std::max(
        longest_ms, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s0).count());
    ++slices;
  }
  EXPECT_FALSE(hygiene_->scanning());
  std::printf(
      "[          ] %u flows, %u idle clients: the scan took %d slices of at most %.1f ms (budget %.0f ms); "
      "the first, in on_disconnected(), %.1f ms\n",
      kFlows, fresh, slices, longest_ms, static_cast<double>(FlowHygiene::kScanSliceNs) / 1e6, first_ms);
  const auto j = hygiene_->counters_json();
  EXPECT_EQ(j["stale_resets"]["proactive"], fresh) << j.dump();
  EXPECT_EQ(j["proactive_failed"], 0U) << j.dump();
}

// Cost of the walks on a full-size table, and what the sweep expires.
TEST_F(FlowHygieneTest, WalkAndSweepCostOnHundredThousandFlows) {
  ASSERT_NO_FATAL_FAILURE(make_hygiene());
  const int fd = bpf_obj_get((dp_->pin_dir() + "/" UPLINKD_MAP_FLOWS).c_str());
  ASSERT_GE(fd, 0);
  constexpr uint32_t kFlows = 100000;
  const uint64_t now = static_cast<uint64_t>(health::monotonic_ns());
  for (uint32_t i = 0; i < kFlows; ++i) {
    flow_key k{};
    k.saddr[0] = 10;
    std::memcpy(&k.saddr[1], &i, 3);  // 100000 < 2^24: every key distinct
    k.daddr[0] = 10;
    k.daddr[1] = 2;
    k.sport = static_cast<uint16_t>(i);
    k.dport = htons(443);
    k.proto = i % 2 == 0 ? IPPROTO_TCP : IPPROTO_UDP;
    k.family = 4;
    flow_value v{};
    // Every fourth flow (all UDP) goes idle: stamped now, while the sweep below runs at now + 200 s,
    // beyond UDP's 180 s. The others carry a stamp from the future, which counts as fresh. Time is
    // moved forward rather than stamps back, so the test does not depend on the machine's uptime
    // (a VM that just booted has little).
    const bool idle = i % 4 == 1;
    v.last_seen_ns = idle ? now : now + 1000ULL * 1000000000ULL;
    v.uplink_id = kUplink;
    v.mark = kMark;
    v.origin = FLOW_ORIGIN_RULE;
    v.rule_id = 1;
    ASSERT_EQ(bpf_map_update_elem(fd, &k, &v, BPF_ANY), 0);
  }
  close(fd);
  // Every other TCP flow has a tcp_seen entry, so the join has work to do; the join runs at a time
  // when all of them are older than the TCP timeout, so no RST goes out and the figure is the walk's.
  const int64_t join_at =
      static_cast<int64_t>(now) + (config_.globals.flow_timeout_tcp_s + 60LL) * 1000000000LL;
  const int64_t sweep_at = static_cast<int64_t>(now) + 200LL * 1000000000LL;
  const int seen_fd = bpf_obj_get((dp_->pin_dir() + "/" UPLINKD_MAP_TCP_SEEN).c_str());
  ASSERT_GE(seen_fd, 0);
  size_t with_seen = 0;
  dp_->for_each_flow([&](const flow_key& k, const flow_value&) {
    if (k.proto == IPPROTO_TCP && k.saddr[0] == 10 && (with_seen++ % 2) == 0) {
      tcp_seen ts{};
      ts.last_seen_ns = now;  // older than the TCP timeout at join_at: no RST sent
      ts.ifindex = if_nametoindex("r0");
      bpf_map_update_elem(seen_fd, &k, &ts, BPF_ANY);
    }
    return true;
  });
  close(seen_fd);
  write_uplink(UPLINK_STATE_OFFLINE, 1);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(hygiene_->reset_stale_tcp(kUplink, 1, join_at), 0U);  // every tcp_seen too old
  auto t1 = std::chrono::steady_clock::now();
  size_t visited = dp_->for_each_flow([](const flow_key&, const flow_value&) { return true; });
  auto t2 = std::chrono::steady_clock::now();
  EXPECT_GE(visited, kFlows);  // plus the few of the setup's pings
  EXPECT_LE(visited, kFlows + 8);
  int calls = 0;
  double longest_ms = 0;
  do {
    auto s0 = std::chrono::steady_clock::now();
    hygiene_->sweep(sweep_at);
    longest_ms = std::max(
        longest_ms, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s0).count());
    ++calls;
  } while (!hygiene_->counters_json()["tracked_known"].get<bool>() && calls < 100);
  std::printf(
      "[          ] %u flows, %zu tcp_seen: stale-TCP scan %.1f ms, bare flows walk %.1f ms, sweep pass %d "
      "calls, "
      "longest call %.1f ms\n",
      kFlows, with_seen / 2, std::chrono::duration<double, std::milli>(t1 - t0).count(),
      std::chrono::duration<double, std::milli>(t2 - t1).count(), calls, longest_ms);
  const auto j = hygiene_->counters_json();
  EXPECT_GE(j["tracked"].get<uint64_t>(), kFlows) << j.dump();
  EXPECT_LE(j["tracked"].get<uint64_t>(), kFlows + 8) << j.dump();
  EXPECT_EQ(j["expired"], kFlows / 4) << j.dump();  // the idle UDP quarter (i % 4 == 1)
}

TEST(FlowReset, Ipv6ChecksumsAndLayout) {
  flow_key k{};
  inet_pton(AF_INET6, "2001:db8:a::2", k.saddr);
  inet_pton(AF_INET6, "2001:db8:b::1", k.daddr);
  k.sport = htons(40000);
  k.dport = htons(443);
  k.proto = IPPROTO_TCP;
  k.family = 6;
  tcp_seen s{};
  s.next_seq = 0x12345678;
  const uint8_t client[6] = {2, 0, 0, 0, 0, 1}, router[6] = {2, 0, 0, 0, 0, 2};
  std::memcpy(s.client_mac, client, 6);
  std::memcpy(s.router_mac, router, 6);
  const auto p = build_client_reset(k, s);
  ASSERT_EQ(p.size(), 14U + 40U + 20U);
  EXPECT_EQ(std::memcmp(p.data(), client, 6), 0);
  EXPECT_EQ(std::memcmp(p.data() + 6, router, 6), 0);
  EXPECT_EQ(p[12], 0x86);
  EXPECT_EQ(p[13], 0xdd);
  const uint8_t* ip = p.data() + 14;
  EXPECT_EQ(std::memcmp(ip + 8, k.daddr, 16), 0);   // from the remote
  EXPECT_EQ(std::memcmp(ip + 24, k.saddr, 16), 0);  // to the client
  const uint8_t* tcp = ip + 40;
  EXPECT_EQ(tcp[0] << 8 | tcp[1], 443);
  EXPECT_EQ(tcp[2] << 8 | tcp[3], 40000);
  EXPECT_EQ(static_cast<uint32_t>(tcp[4] << 24 | tcp[5] << 16 | tcp[6] << 8 | tcp[7]), 0x12345678U);
  EXPECT_EQ(tcp[13], 0x04);  // RST only
  // Pseudo-header plus segment sums to 0xFFFF when the checksum is right.
  uint32_t sum = 0;
  for (int i = 0; i < 32; i += 2) sum += static_cast<uint32_t>(ip[8 + i] << 8 | ip[9 + i]);
  sum += 20 + IPPROTO_TCP;
  for (int i = 0; i < 20; i += 2) sum += static_cast<uint32_t>(tcp[i] << 8 | tcp[i + 1]);
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  EXPECT_EQ(sum, 0xFFFFU);
  k.proto = IPPROTO_UDP;
  EXPECT_TRUE(build_client_reset(k, s).empty());
}

}  // namespace
}  // namespace uplinkd
