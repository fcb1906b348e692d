// PathMtuProber in a three-namespace lab, with the real XDP datapath on the router's uplink:
//
//   router  wan1 192.0.2.2/24 2001:db8:1::2/64
//      |    (MTU 1500)
//   middle  m0 192.0.2.1/24 2001:db8:1::1/64,  m1 198.51.100.1/24 2001:db8:2::1/64
//      |    (MTU `narrow`: 1400 unless a test says otherwise)
//   target  t0 198.51.100.2/24 2001:db8:2::2/64,  lo 203.0.113.1/32 2001:db8:ff::1/128
//
// The middle drops the ICMP "fragmentation needed" / "packet too big" it would send back, the
// black hole path MTU discovery falls into: the search must find the narrow link from echo
// replies alone. Namespaces are ulnet-<pid>-pmtu<n>-{r,m,t}, so NetnsTest's sweep of dead runs
// removes them after a crash; TearDown deletes them.
#include "pmtu/path_mtu.h"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "datapath/datapath.h"
#include "health/monitor.h"
#include "netns_fixture.h"

namespace uplinkd::pmtu {
namespace {

using uplinkd::testing::enter_netns;
using uplinkd::testing::must_run;
using uplinkd::testing::run_command;
using uplinkd::testing::wait_until;

constexpr uint32_t kDatapathId = 1;
constexpr uint32_t kMark = 0x100;
constexpr const char* kTargetV4 = "198.51.100.2";
constexpr const char* kTargetV6 = "2001:db8:2::2";
constexpr const char* kFarV4 = "203.0.113.1";  // on the target's lo: the second target
constexpr const char* kFarV6 = "2001:db8:ff::1";

IpAddress address(const char* text) { return *IpAddress::parse(text); }

class PathMtuTest : public ::testing::Test {
 protected:
  // Builds the lab with the middle-target link at `narrow` bytes and enters the router.
  void build_lab(int narrow) {
    static std::atomic<int> counter{0};
    base_ = "ulnet-" + std::to_string(getpid()) + "-pmtu" + std::to_string(counter++);
    original_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(original_, 0);
    for (const char* suffix : {"-r", "-m", "-t"}) {
      ASSERT_EQ(run_command("ip netns add " + base_ + suffix).status, 0) << "ip netns add (root needed)";
      made_.push_back(base_ + suffix);
      must_run("ip -n " + base_ + suffix + " link set lo up");
      must_run("ip netns exec " + base_ + suffix +
               " sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"
               " net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0");
    }
    const std::string r = ns("r"), m = ns("m"), t = ns("t");
    must_run("ip -n " + r + " link add wan1 type veth peer name m0 netns " + m);
    must_run("ip -n " + m + " link add m1 type veth peer name t0 netns " + t);
    must_run("ip -n " + m + " link set m1 mtu " + std::to_string(narrow));
    must_run("ip -n " + t + " link set t0 mtu " + std::to_string(narrow));
    for (const auto& [space, command] : std::vector<std::pair<std::string, std::string>>{
             {r, "addr add 192.0.2.2/24 dev wan1"},
             {r, "addr add 2001:db8:1::2/64 dev wan1 nodad"},
             {m, "addr add 192.0.2.1/24 dev m0"},
             {m, "addr add 2001:db8:1::1/64 dev m0 nodad"},
             {m, "addr add 198.51.100.1/24 dev m1"},
             {m, "addr add 2001:db8:2::1/64 dev m1 nodad"},
             {t, "addr add 198.51.100.2/24 dev t0"},
             {t, "addr add 2001:db8:2::2/64 dev t0 nodad"},
             {t, std::string("addr add ") + kFarV4 + "/32 dev lo"},
             {t, std::string("addr add ") + kFarV6 + "/128 dev lo"},
             {r, "link set wan1 up"},
             {m, "link set m0 up"},
             {m, "link set m1 up"},
             {t, "link set t0 up"},
         }) {
      std::string line = "ip -n " + space;
      line += " " + command;
      must_run(line);
    }
    must_run("ip -n " + r + " route add default via 192.0.2.1");
    must_run("ip -n " + r + " -6 route add default via 2001:db8:1::1");
    must_run("ip -n " + m + " route add " + kFarV4 + " via 198.51.100.2");
    must_run("ip -n " + m + " -6 route add " + kFarV6 + " via 2001:db8:2::2");
    must_run("ip -n " + t + " route add default via 198.51.100.1");
    must_run("ip -n " + t + " -6 route add default via 2001:db8:2::1");
    must_run("ip netns exec " + m + " sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
    must_run("ip netns exec " + m +
             " nft 'add table inet pmtu_blackhole; "
             "add chain inet pmtu_blackhole out { type filter hook output priority 0; policy accept; }; "
             "add rule inet pmtu_blackhole out icmp type destination-unreachable icmp code frag-needed "
             "counter drop; "
             "add rule inet pmtu_blackhole out icmpv6 type packet-too-big counter drop'");
    // Every target answers a plain ping before the test starts: neighbours resolved, routes in.
    for (const char* target : {kTargetV4, kTargetV6, kFarV4, kFarV6}) {
      ASSERT_TRUE(wait_until([&] {
        return run_command("ip netns exec " + r + " ping -c1 -W1 " + target).status == 0;
      })) << target
          << " unreachable from the router";
    }
    ASSERT_EQ(enter_netns("/run/netns/" + r), 0);
    ifindex_ = static_cast<int>(if_nametoindex("wan1"));
    ASSERT_GT(ifindex_, 0);
    // As the daemon does: every reply of the datapath id goes to every monitor and prober.
    dp_ = std::make_unique<datapath::Datapath>("/sys/fs/bpf", base_, [this](const probe_reply_event& e) {
      for (PathMtuProber* p : probers_) p->on_reply(e, health::monotonic_ns());
      if (monitor_) monitor_->on_reply(e, health::monotonic_ns());
    });
    datapath::AttachOptions attach;
    attach.uplink_id = kDatapathId;
    attach.device = "wan1";
    attach.ifindex = ifindex_;
    dp_->attach(attach);
  }

  void TearDown() override {
    probers_.clear();
    owned_.clear();
    monitor_.reset();
    dp_.reset();
    if (original_ >= 0) {
      EXPECT_EQ(setns(original_, CLONE_NEWNET), 0);
      close(original_);
    }
    for (const auto& space : made_) EXPECT_EQ(run_command("ip netns del " + space).status, 0) << space;
  }

  std::string ns(const char* role) const { return base_ + "-" + role; }

  PathMtuProber& make_prober(int family, const std::vector<const char*>& targets) {
    std::vector<IpAddress> ips;
    ips.reserve(targets.size());
    for (const char* t : targets) ips.push_back(address(t));
    owned_.push_back(
        std::make_unique<PathMtuProber>("wan", "wan1", kMark, family, ips, *dp_, PathMtuProber::Options{}));
    probers_.push_back(owned_.back().get());
    return *owned_.back();
  }

  // Drives the prober as the daemon's loop would (drain replies, run, sleep until its next
  // wakeup or a reply) until the measurement ends or `limit` passes. Returns the time it took.
  // `also` runs beside it each turn (another component on the same datapath).
  double measure(
      PathMtuProber& prober, std::chrono::milliseconds limit = std::chrono::milliseconds(4000),
      const std::function<void(int64_t)>& also = [](int64_t) {}) {
    const int64_t started = health::monotonic_ns();
    const int64_t deadline = started + static_cast<int64_t>(limit.count()) * 1000000;
    while (prober.result().state == PathMtuProber::Result::State::Measuring) {
      const int64_t now = health::monotonic_ns();
      if (now >= deadline) break;
      dp_->poll_replies();
      prober.run(health::monotonic_ns());
      also(health::monotonic_ns());
      const int64_t wake = std::min(prober.next_wakeup(), deadline);
      const int64_t wait_ms = std::clamp<int64_t>((wake - health::monotonic_ns()) / 1000000, 0, 50);
      pollfd ring{dp_->ring_fd(), POLLIN, 0};
      poll(&ring, 1, static_cast<int>(wait_ms));
    }
    return static_cast<double>(health::monotonic_ns() - started) / 1e9;
  }

  // In the target namespace: echo requests to `target_v4` larger than 1000 bytes are dropped.
  void target_drops_big_echoes(const char* target_v4) {
    must_run("ip netns exec " + ns("t") +
             " nft 'add table ip bigdrop; "
             "add chain ip bigdrop in { type filter hook input priority 0; policy accept; }; "
             "add rule ip bigdrop in ip daddr " +
             target_v4 + " icmp type echo-request ip length > 1000 drop'");
  }

  // Packets the middle's black-hole rules dropped (ICMP errors it tried to send).
  uint64_t blackholed() {
    std::string listing =
        run_command("ip netns exec " + ns("m") + " nft list table inet pmtu_blackhole").output;
    uint64_t total = 0;
    for (size_t at = listing.find("packets "); at != std::string::npos;
         at = listing.find("packets ", at + 1)) {
      total += std::stoull(listing.substr(at + 8));
    }
    return total;
  }

  std::string base_;
  int original_ = -1;
  std::vector<std::string> made_;
  int ifindex_ = 0;
  std::unique_ptr<datapath::Datapath> dp_;
  std::vector<std::unique_ptr<PathMtuProber>> owned_;
  std::vector<PathMtuProber*> probers_;
  std::unique_ptr<health::UplinkMonitor> monitor_;
};

using State = PathMtuProber::Result::State;

TEST_F(PathMtuTest, FindsTheNarrowLinkBehindABlackHoleV4) {
  ASSERT_NO_FATAL_FAILURE(build_lab(1400));
  PathMtuProber& prober = make_prober(AF_INET, {kTargetV4});
  prober.start(ifindex_, kDatapathId, 1500, health::monotonic_ns());
  EXPECT_EQ(prober.result().state, State::Measuring);
  const double took = measure(prober);
  const auto& r = prober.result();
  ASSERT_EQ(r.state, State::Measured) << r.note;
  EXPECT_EQ(r.mtu, 1400);
  EXPECT_EQ(r.device_mtu, 1500);
  EXPECT_EQ(r.per_target.at(kTargetV4), 1400);
  EXPECT_LT(took, 2.0);
  EXPECT_GT(blackholed(), 0u) << "the middle never tried to report the narrow link";
}

TEST_F(PathMtuTest, FindsTheNarrowLinkBehindABlackHoleV6) {
  ASSERT_NO_FATAL_FAILURE(build_lab(1400));
  PathMtuProber& prober = make_prober(AF_INET6, {kTargetV6});
  prober.start(ifindex_, kDatapathId, 1500, health::monotonic_ns());
  const double took = measure(prober);
  const auto& r = prober.result();
  ASSERT_EQ(r.state, State::Measured) << r.note;
  EXPECT_EQ(r.mtu, 1400);
  EXPECT_EQ(r.per_target.at(kTargetV6), 1400);
  EXPECT_LT(took, 2.0);
  EXPECT_GT(blackholed(), 0u);
}

TEST_F(PathMtuTest, CleanPathGivesTheDeviceMtu) {
  ASSERT_NO_FATAL_FAILURE(build_lab(1500));
  PathMtuProber& v4 = make_prober(AF_INET, {kTargetV4});
  PathMtuProber& v6 = make_prober(AF_INET6, {kFarV6});
  const int64_t now = health::monotonic_ns();
  v4.start(ifindex_, kDatapathId, 1500, now);
  v6.start(ifindex_, kDatapathId, 1500, now);
  measure(v4);
  measure(v6);
  EXPECT_EQ(v4.result().state, State::Measured) << v4.result().note;
  EXPECT_EQ(v4.result().mtu, 1500);
  EXPECT_EQ(v6.result().state, State::Measured) << v6.result().note;
  EXPECT_EQ(v6.result().mtu, 1500);
  const nlohmann::json j = v4.json(health::monotonic_ns());
  EXPECT_EQ(j["state"], "measured");
  EXPECT_EQ(j["mtu"], 1500);
  EXPECT_EQ(j["device_mtu"], 1500);
  EXPECT_TRUE(j["measured_ago_s"].is_number());
  EXPECT_EQ(j["targets"][kTargetV4], 1500);
}

TEST_F(PathMtuTest, TargetDroppingBigEchoesIsUnknownNeverLow) {
  ASSERT_NO_FATAL_FAILURE(build_lab(1400));
  target_drops_big_echoes(kTargetV4);
  PathMtuProber& prober = make_prober(AF_INET, {kTargetV4});
  prober.start(ifindex_, kDatapathId, 1500, health::monotonic_ns());
  measure(prober);
  const auto& r = prober.result();
  EXPECT_EQ(r.state, State::Unknown);
  EXPECT_EQ(r.mtu, std::nullopt) << "a host that drops big ICMP must not make the path look small";
  EXPECT_EQ(r.per_target.at(kTargetV4), 1000);
  EXPECT_NE(r.note.find("no echo above 1000 bytes"), std::string::npos) << r.note;
  const nlohmann::json j = prober.json(health::monotonic_ns());
  EXPECT_EQ(j["state"], "unknown");
  EXPECT_TRUE(j["mtu"].is_null());
}

TEST_F(PathMtuTest, AnotherTargetAnsweringBigEchoesProvesThePath) {
  ASSERT_NO_FATAL_FAILURE(build_lab(1400));
  target_drops_big_echoes(kTargetV4);
  PathMtuProber& prober = make_prober(AF_INET, {kTargetV4, kFarV4});
  prober.start(ifindex_, kDatapathId, 1500, health::monotonic_ns());
  const double took = measure(prober);
  const auto& r = prober.result();
  ASSERT_EQ(r.state, State::Measured) << r.note;
  EXPECT_EQ(r.mtu, 1400);
  EXPECT_EQ(r.per_target.at(kTargetV4), 1000);
  EXPECT_EQ(r.per_target.at(kFarV4), 1400);
  EXPECT_LT(took, 2.0);
}

TEST_F(PathMtuTest, NoAnswerAtAllIsUnknown) {
  ASSERT_NO_FATAL_FAILURE(build_lab(1400));
  PathMtuProber& prober = make_prober(AF_INET, {"198.51.100.99"});  // nobody there
  prober.start(ifindex_, kDatapathId, 1500, health::monotonic_ns());
  measure(prober);
  const auto& r = prober.result();
  EXPECT_EQ(r.state, State::Unknown);
  EXPECT_EQ(r.mtu, std::nullopt);
  EXPECT_TRUE(r.per_target.empty());
  EXPECT_EQ(r.note.rfind("no target answered", 0), 0u) << r.note;
}

TEST_F(PathMtuTest, DeviceMtuChangeMeasuresAgain) {
  ASSERT_NO_FATAL_FAILURE(build_lab(1500));
  PathMtuProber& prober = make_prober(AF_INET, {kTargetV4});
  prober.start(ifindex_, kDatapathId, 1500, health::monotonic_ns());
  measure(prober);
  ASSERT_EQ(prober.result().mtu, 1500) << prober.result().note;

  must_run("ip link set wan1 mtu 1450");  // the test thread is in the router namespace
  prober.set_device_mtu(1450, health::monotonic_ns());
  EXPECT_EQ(prober.result().state, State::Measuring);
  const nlohmann::json during = prober.json(health::monotonic_ns());
  EXPECT_EQ(during["state"], "measuring");
  EXPECT_EQ(during["mtu"], 1450) << "the previous figure stays visible, never above the device MTU";
  measure(prober);
  const auto& r = prober.result();
  ASSERT_EQ(r.state, State::Measured) << r.note;
  ASSERT_TRUE(r.mtu);
  EXPECT_LE(*r.mtu, 1450);
  EXPECT_EQ(*r.mtu, 1450);
  EXPECT_EQ(r.device_mtu, 1450);
}

// The health monitor of the same uplink pings the same target meanwhile: none of the prober's
// echoes (answered or lost) may show in its counts, nor any of its echoes in the prober's search.
TEST_F(PathMtuTest, ProbesNeverCountTowardTheUplinksHealth) {
  ASSERT_NO_FATAL_FAILURE(build_lab(1400));
  config::InterfaceConfig cfg;
  cfg.name = "wan";
  cfg.id = kDatapathId;
  cfg.enabled = true;
  cfg.device = "wan1";
  cfg.track_ip = {address(kTargetV4)};
  cfg.interval_s = cfg.failure_interval_s = cfg.recovery_interval_s = 0.2;
  cfg.timeout_s = 1;
  monitor_ = std::make_unique<health::UplinkMonitor>(cfg, kMark, *dp_,
                                                     [](health::UplinkMonitor&, health::Action, bool) {});
  PathMtuProber& prober = make_prober(AF_INET, {kTargetV4});
  const int64_t now = health::monotonic_ns();
  monitor_->start(ifindex_, kDatapathId, 0, now);
  prober.start(ifindex_, kDatapathId, 1500, now);
  measure(prober, std::chrono::milliseconds(4000), [&](int64_t t) { monitor_->run(t); });
  ASSERT_EQ(prober.result().state, State::Measured) << prober.result().note;
  EXPECT_EQ(prober.result().mtu, 1400);
  EXPECT_GT(monitor_->probes_replied(), 0u) << "the monitor's own echoes are answered";
  EXPECT_LE(monitor_->probes_replied(), monitor_->probes_sent()) << "the prober's replies counted as health";
  EXPECT_EQ(monitor_->probes_lost(), 0u) << "the prober's unanswered sizes counted as losses";
}

TEST_F(PathMtuTest, IdleAfterMeasuringUntilTheInterval) {
  ASSERT_NO_FATAL_FAILURE(build_lab(1500));
  PathMtuProber& prober = make_prober(AF_INET, {kTargetV4});
  const int64_t started = health::monotonic_ns();
  prober.start(ifindex_, kDatapathId, 1500, started);
  measure(prober);
  ASSERT_EQ(prober.result().state, State::Measured);
  const int64_t measured_at = prober.result().measured_at_ns;
  EXPECT_EQ(prober.next_wakeup(), measured_at + 600LL * 1000000000) << "the default interval";
  prober.run(measured_at + 600LL * 1000000000);  // the interval passed: measuring again
  EXPECT_EQ(prober.result().state, State::Measuring);
  EXPECT_EQ(prober.result().mtu, 1500);
  prober.stop();
  EXPECT_EQ(prober.result().state, State::Measured) << "the last figure stays after stop";
  EXPECT_EQ(prober.next_wakeup(), INT64_MAX);
}

}  // namespace
}  // namespace uplinkd::pmtu
