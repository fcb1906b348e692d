// WireGuard discovery and endpoint route hygiene against the real thing: wireguard-go in a private
// namespace configured with `wg set` (the host has no kernel WireGuard module; kernel devices are
// covered in the VM tests), and host routes as netifd writes them.
//
//   router (the test thread works here): wan1 192.0.2.2/24 2001:db8:1::2/64 -> isp1 (gateway .1)
//                                         wan2 198.51.100.2/24 2001:db8:2::2/64 -> isp2 (gateway .1)
//   the endpoint 203.0.113.5 / 2001:db8:ff::5 lies beyond either gateway.
//
// Namespaces are named h7wg-<pid>-<n>[-isp1|-isp2] and deleted in TearDown; wireguard-go runs in the
// foreground as a child, killed and its socket removed in TearDown.
#include <bpf/bpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "datapath/wg_steering.h"
#include "netns_fixture.h"
#include "wireguard/discovery.h"
#include "wireguard/endpoint_routes.h"
#include "wireguard/manager.h"
#include "wireguard/watcher.h"

extern char** environ;

namespace uplinkd::wireguard {
namespace {

using uplinkd::testing::CommandResult;
using uplinkd::testing::enter_netns;
using uplinkd::testing::must_run;
using uplinkd::testing::normalize_lines;
using uplinkd::testing::run_command;
using uplinkd::testing::wait_until;

IpAddress ip(const char* text) { return *IpAddress::parse(text); }

class WireguardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    base_ = "h7wg-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    // Short and unique: a device name has at most 15 characters.
    device_ = "h7wg" + std::to_string(getpid() % 100000) + std::to_string(counter.load() % 10);
    original_netns_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(original_netns_, 0);
    for (const char* suffix : {"", "-isp1", "-isp2"}) {
      ASSERT_EQ(run_command("ip netns add " + base_ + suffix).status, 0) << "ip netns add (root needed)";
      namespaces_.push_back(base_ + suffix);
      must_run("ip -n " + base_ + suffix + " link set lo up");
      must_run("ip netns exec " + base_ + suffix +
               " sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0");
    }
    add_uplink("wan1", "isp1", "192.0.2", "2001:db8:1::");
    add_uplink("wan2", "isp2", "198.51.100", "2001:db8:2::");
    ASSERT_EQ(enter_netns("/run/netns/" + base_), 0);
    wan1_ = static_cast<int>(if_nametoindex("wan1"));
    wan2_ = static_cast<int>(if_nametoindex("wan2"));
    ASSERT_GT(wan1_, 0);
    ASSERT_GT(wan2_, 0);
    uapi_dir_ = kDefaultUapiDir;
  }

  void TearDown() override {
    stop_wireguard_go();
    std::error_code ignored;
    std::filesystem::remove(wg_log_path(), ignored);
    if (original_netns_ >= 0) {
      EXPECT_EQ(setns(original_netns_, CLONE_NEWNET), 0);
      close(original_netns_);
    }
    for (const std::string& ns : namespaces_) {
      EXPECT_EQ(run_command("ip netns del " + ns).status, 0) << "ip netns del " << ns;
    }
  }

  void add_uplink(const std::string& dev, const std::string& isp, const std::string& v4,
                  const std::string& v6) {
    const std::string isp_ns = base_ + "-" + isp;
    must_run("ip -n " + base_ + " link add " + dev + " type veth peer name " + isp + " netns " + isp_ns);
    must_run("ip -n " + base_ + " addr add " + v4 + ".2/24 dev " + dev);
    must_run("ip -n " + base_ + " addr add " + v6 + "2/64 dev " + dev + " nodad");
    must_run("ip -n " + isp_ns + " addr add " + v4 + ".1/24 dev " + isp);
    must_run("ip -n " + isp_ns + " addr add " + v6 + "1/64 dev " + isp + " nodad");
    must_run("ip -n " + base_ + " link set " + dev + " up");
    must_run("ip -n " + isp_ns + " link set " + isp + " up");
  }

  // Starts wireguard-go for device_ in the router namespace, in the foreground as our child.
  bool start_wireguard_go() {
    const std::string ns = base_;
    std::vector<std::string> args = {"ip",
                                     "netns",
                                     "exec",
                                     ns,
                                     "env",
                                     "WG_PROCESS_FOREGROUND=1",
                                     "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1",
                                     "wireguard-go",
                                     device_};
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    // Its output is kept, so a start that fails (no /dev/net/tun, a read-only /var/run) says why.
    posix_spawn_file_actions_addopen(&actions, 1, wg_log_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    int err = posix_spawnp(&wg_pid_, "ip", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (err != 0) {
      wg_pid_ = -1;
      return false;
    }
    const bool up = wait_until(
        [&] { return std::filesystem::exists(socket_path()) && if_nametoindex(device_.c_str()) != 0; });
    if (!up) {
      std::ifstream in(wg_log_path());
      std::stringstream text;
      text << in.rdbuf();
      std::cerr << "wireguard-go " << device_ << " output:\n" << text.str() << "\n";
    }
    return up;
  }

  std::string wg_log_path() const { return "/tmp/" + device_ + ".wireguard-go.log"; }

  void stop_wireguard_go() {
    if (wg_pid_ > 0) {
      kill(wg_pid_, SIGTERM);
      bool exited = wait_until([&] { return waitpid(wg_pid_, nullptr, WNOHANG) == wg_pid_; });
      if (!exited) {
        kill(wg_pid_, SIGKILL);
        waitpid(wg_pid_, nullptr, 0);
      }
      wg_pid_ = -1;
    }
    std::error_code ignored;
    std::filesystem::remove(socket_path(), ignored);
  }

  std::string socket_path() const { return uapi_dir_ + "/" + device_ + ".sock"; }

  // `wg` in the router namespace (it finds wireguard-go through its socket).
  std::string wg(const std::string& args) { return must_run("ip netns exec " + base_ + " wg " + args); }
  std::string key() { return run_command("wg genkey | wg pubkey").output.substr(0, 44); }
  std::string router_ip(const std::string& args) { return must_run("ip -n " + base_ + " " + args); }
  std::string route_get(const std::string& address) {
    return normalize_lines(router_ip("route get " + address));
  }

  std::string base_;
  std::string device_;
  std::string uapi_dir_;
  std::vector<std::string> namespaces_;
  int original_netns_ = -1;
  pid_t wg_pid_ = -1;
  int wan1_ = 0;
  int wan2_ = 0;
};

const PeerState* find_peer(const std::vector<PeerState>& peers, const std::string& key) {
  auto it = std::find_if(peers.begin(), peers.end(), [&](const PeerState& p) { return p.public_key == key; });
  return it == peers.end() ? nullptr : &*it;
}

// ---- discovery ----------------------------------------------------------------------------------

TEST_F(WireguardTest, WatcherFollowsWireguardGoPeers) {
  ASSERT_TRUE(start_wireguard_go()) << "wireguard-go did not create " << socket_path();
  const std::string a = key();
  const std::string b = key();
  const std::string c = key();
  ASSERT_EQ(a.size(), 44U);
  wg("set " + device_ + " listen-port 0 fwmark 0x1234 peer " + a +
     " endpoint 203.0.113.5:51820 allowed-ips 0.0.0.0/1,128.0.0.0/1 peer " + b + " allowed-ips 10.9.0.2/32");

  WireguardWatcher watcher(uapi_dir_);
  WatchChanges first = watcher.poll();
  EXPECT_TRUE(watcher.problems().empty()) << watcher.problems().front();
  EXPECT_EQ(first.devices_added, std::vector<std::string>{device_});
  ASSERT_EQ(first.added.size(), 2U);
  const PeerState* pa = find_peer(watcher.peers(), a);
  ASSERT_NE(pa, nullptr);
  ASSERT_TRUE(pa->endpoint);
  EXPECT_EQ(pa->endpoint->str(), "203.0.113.5:51820");
  EXPECT_EQ(pa->fwmark, 0x1234U);
  EXPECT_EQ(pa->implementation, "userspace");
  EXPECT_EQ(pa->device_ifindex, static_cast<int>(if_nametoindex(device_.c_str())));
  const PeerState* pb = find_peer(watcher.peers(), b);
  ASSERT_NE(pb, nullptr);
  EXPECT_FALSE(pb->endpoint);  // listed with endpoint none

  EXPECT_TRUE(watcher.poll().empty());  // nothing changed

  // The endpoint moves (DDNS, roaming); an IPv6 peer arrives; a peer is removed.
  wg("set " + device_ + " peer " + a + " endpoint 198.51.100.77:51820");
  wg("set " + device_ + " peer " + c + " endpoint [2001:db8:ff::5]:51821 allowed-ips 10.9.0.3/32");
  wg("set " + device_ + " peer " + b + " remove");
  WatchChanges second = watcher.poll();
  ASSERT_EQ(second.moved.size(), 1U);
  EXPECT_EQ(second.moved[0].before.endpoint->str(), "203.0.113.5:51820");
  EXPECT_EQ(second.moved[0].now.endpoint->str(), "198.51.100.77:51820");
  ASSERT_EQ(second.added.size(), 1U);
  EXPECT_EQ(second.added[0].public_key, c);
  ASSERT_TRUE(second.added[0].endpoint);
  EXPECT_EQ(second.added[0].endpoint->str(), "[2001:db8:ff::5]:51821");
  ASSERT_EQ(second.removed.size(), 1U);
  EXPECT_EQ(second.removed[0].public_key, b);

  // The device vanishes: its peers go, nothing throws, no problem is reported for a stale socket.
  stop_wireguard_go();
  ASSERT_TRUE(wait_until([&] { return if_nametoindex(device_.c_str()) == 0; }));
  WatchChanges third = watcher.poll();
  EXPECT_EQ(third.devices_removed, std::vector<std::string>{device_});
  EXPECT_EQ(third.removed.size(), 2U);
  EXPECT_TRUE(watcher.peers().empty());
  EXPECT_TRUE(watcher.problems().empty());
}

TEST_F(WireguardTest, SocketOfAnotherNamespaceIsIgnored) {
  ASSERT_TRUE(start_wireguard_go());
  // The test thread goes to isp1, where no link of that name exists; the shared socket directory
  // still holds the socket.
  ASSERT_EQ(enter_netns("/run/netns/" + base_ + "-isp1"), 0);
  WireguardWatcher watcher(uapi_dir_);
  watcher.poll();
  EXPECT_TRUE(std::none_of(watcher.devices().begin(), watcher.devices().end(),
                           [&](const Device& d) { return d.name == device_; }));
  ASSERT_EQ(enter_netns("/run/netns/" + base_), 0);
}

TEST_F(WireguardTest, KernelDevice) {
  CommandResult made = run_command("ip -n " + base_ + " link add h7wgk0 type wireguard");
  if (made.status != 0) {
    GTEST_SKIP() << "no kernel WireGuard here (ip link add type wireguard: " << made.output
                 << "); covered by the VM tests";
  }
  const std::string a = key();
  must_run("ip netns exec " + base_ + " wg set h7wgk0 peer " + a +
           " endpoint 203.0.113.5:51820 allowed-ips 10.0.0.0/8");
  std::string error;
  std::vector<std::string> links = kernel_wireguard_links(&error);
  EXPECT_NE(std::find(links.begin(), links.end(), "h7wgk0"), links.end()) << error;
  auto device = query_kernel_device("h7wgk0", &error);
  ASSERT_TRUE(device) << error;
  ASSERT_EQ(device->peers.size(), 1U);
  EXPECT_EQ(device->peers[0].public_key, a);
  EXPECT_EQ(device->peers[0].endpoint->str(), "203.0.113.5:51820");
  must_run("ip -n " + base_ + " link del h7wgk0");
  EXPECT_FALSE(query_kernel_device("h7wgk0", &error));
}

// ---- route hygiene ------------------------------------------------------------------------------

TEST_F(WireguardTest, StaleHostRouteFollowsActiveUplinkAndIsRestored) {
  // netifd's pin through the backup, in main and (mwan3's copy) in the backup's table 2.
  router_ip("route add 203.0.113.5 via 198.51.100.1 dev wan2 proto static metric 20");
  router_ip("route add 203.0.113.5 via 198.51.100.1 dev wan2 proto static table 2");
  const std::string before = normalize_lines(router_ip("route show table all 203.0.113.5"));
  {
    EndpointRoutes routes;
    routes.set_uplink_tables({{1, wan1_}, {2, wan2_}});
    EndpointRouteRequest request{ip("203.0.113.5"), ActiveUplink{wan1_, ip("192.0.2.1")}, true, 0, 0};
    std::vector<EndpointRouteReport> reports = routes.refresh({request});
    ASSERT_EQ(reports.size(), 1U);
    EXPECT_TRUE(reports[0].problems.empty()) << reports[0].problems.front();
    ASSERT_EQ(reports[0].fixed.size(), 1U);
    EXPECT_EQ(
        reports[0].fixed[0],
        "203.0.113.5 via 198.51.100.1 dev wan2 table main proto static metric 20 -> via 192.0.2.1 dev wan1");
    EXPECT_EQ(normalize_lines(router_ip("route show 203.0.113.5")),
              "203.0.113.5 via 192.0.2.1 dev wan1 proto static metric 20\n");
    EXPECT_EQ(normalize_lines(router_ip("route show table 2 203.0.113.5")),
              "203.0.113.5 via 198.51.100.1 dev wan2 proto static\n");  // the backup's own table
    EXPECT_NE(route_get("203.0.113.5").find("dev wan1"), std::string::npos);

    // Failover: the active uplink is now wan2; failback: wan1 again. Still one route, ours.
    request.active = ActiveUplink{wan2_, ip("198.51.100.1")};
    reports = routes.refresh({request});
    EXPECT_EQ(normalize_lines(router_ip("route show 203.0.113.5")),
              "203.0.113.5 via 198.51.100.1 dev wan2 proto static metric 20\n");
    request.active = ActiveUplink{wan1_, ip("192.0.2.1")};
    reports = routes.refresh({request});
    EXPECT_EQ(normalize_lines(router_ip("route show 203.0.113.5")),
              "203.0.113.5 via 192.0.2.1 dev wan1 proto static metric 20\n");
    ASSERT_EQ(reports[0].fixed.size(), 1U);

    // Nothing online: left as it is.
    request.active.reset();
    reports = routes.refresh({request});
    EXPECT_EQ(normalize_lines(router_ip("route show 203.0.113.5")),
              "203.0.113.5 via 192.0.2.1 dev wan1 proto static metric 20\n");
  }  // stop: the original comes back
  EXPECT_EQ(normalize_lines(router_ip("route show table all 203.0.113.5")), before);
}

TEST_F(WireguardTest, StaleIpv6HostRouteFixedAndPutBackWhenEndpointGoes) {
  router_ip("-6 route add 2001:db8:ff::5 via 2001:db8:2::1 dev wan2 proto static metric 20");
  EndpointRoutes routes;
  EndpointRouteRequest request{ip("2001:db8:ff::5"), ActiveUplink{wan1_, ip("2001:db8:1::1")}, true, 0, 0};
  std::vector<EndpointRouteReport> reports = routes.refresh({request});
  ASSERT_EQ(reports[0].fixed.size(), 1U);
  EXPECT_EQ(normalize_lines(router_ip("-6 route show 2001:db8:ff::5")),
            "2001:db8:ff::5 via 2001:db8:1::1 dev wan1 proto static metric 20 pref medium\n");
  routes.refresh({});  // the endpoint is gone (peer removed)
  EXPECT_EQ(normalize_lines(router_ip("-6 route show 2001:db8:ff::5")),
            "2001:db8:ff::5 via 2001:db8:2::1 dev wan2 proto static metric 20 pref medium\n");
}

TEST_F(WireguardTest, FixOffReportsStaleRouteWithoutTouchingIt) {
  router_ip("route add 203.0.113.5 via 198.51.100.1 dev wan2 proto static metric 20");
  EndpointRoutes routes;
  EndpointRouteRequest request{ip("203.0.113.5"), ActiveUplink{wan1_, ip("192.0.2.1")}, false, 0, 0};
  std::vector<EndpointRouteReport> reports = routes.refresh({request});
  ASSERT_EQ(reports[0].stale.size(), 1U);
  EXPECT_EQ(
      reports[0].stale[0],
      "203.0.113.5 via 198.51.100.1 dev wan2 table main proto static metric 20 (active uplink: dev wan1)");
  EXPECT_TRUE(reports[0].fixed.empty());
  EXPECT_EQ(normalize_lines(router_ip("route show 203.0.113.5")),
            "203.0.113.5 via 198.51.100.1 dev wan2 proto static metric 20\n");
}

// No host route at all, but the main table's default route leaves by the backup while steering
// sends the tunnel by wan1: `ip route get` disagrees, and says so under stale until it agrees,
// with the device's fwmark (an ip rule for that mark) or with the main table put right.
TEST_F(WireguardTest, RouteLookupDisagreementReportedAndCleared) {
  router_ip("route add default via 198.51.100.1 dev wan2");
  EndpointRoutes routes;
  EndpointRouteRequest request{ip("203.0.113.5"), ActiveUplink{wan1_, ip("192.0.2.1")}, true, 0, 0};
  std::vector<EndpointRouteReport> reports = routes.refresh({request});
  ASSERT_EQ(reports[0].stale.size(), 1U);
  EXPECT_EQ(reports[0].stale[0], "ip route get 203.0.113.5: dev wan2 (active uplink: dev wan1)");
  EXPECT_TRUE(reports[0].fixed.empty());  // nothing to fix: no host route was touched
  EXPECT_EQ(normalize_lines(router_ip("route show table all 203.0.113.5")), "");

  // The WireGuard socket's fwmark has a rule to a table through wan1: its lookup agrees.
  router_ip("route add default via 192.0.2.1 dev wan1 table 77");
  router_ip("rule add fwmark 0xca6c lookup 77 pref 500");
  request.wg_fwmark = 0xca6c;
  reports = routes.refresh({request});
  EXPECT_TRUE(reports[0].stale.empty()) << reports[0].stale.front();

  // Without the mark it is the main table again; moved to wan1 there, the report clears.
  request.wg_fwmark = 0;
  reports = routes.refresh({request});
  ASSERT_EQ(reports[0].stale.size(), 1U);
  router_ip("route replace default via 192.0.2.1 dev wan1");
  reports = routes.refresh({request});
  EXPECT_TRUE(reports[0].stale.empty()) << reports[0].stale.front();

  // IPv6 alike.
  router_ip("-6 route add default via 2001:db8:2::1 dev wan2");
  EndpointRouteRequest v6{ip("2001:db8:ff::5"), ActiveUplink{wan1_, ip("2001:db8:1::1")}, true, 0, 0};
  reports = routes.refresh({v6});
  ASSERT_EQ(reports[0].stale.size(), 1U);
  EXPECT_EQ(reports[0].stale[0], "ip route get 2001:db8:ff::5: dev wan2 (active uplink: dev wan1)");
  v6.active = ActiveUplink{wan2_, ip("2001:db8:2::1")};
  reports = routes.refresh({v6});
  EXPECT_TRUE(reports[0].stale.empty()) << reports[0].stale.front();
}

TEST_F(WireguardTest, FullTunnelGuardKeepsEndpointOutOfItsTunnel) {
  ASSERT_TRUE(start_wireguard_go());
  const int tunnel = static_cast<int>(if_nametoindex(device_.c_str()));
  router_ip("addr add 10.99.0.2/32 dev " + device_);
  router_ip("link set " + device_ + " up");
  router_ip("route add default via 192.0.2.1 dev wan1");
  router_ip("route add 0.0.0.0/1 dev " + device_);
  router_ip("route add 128.0.0.0/1 dev " + device_);
  ASSERT_NE(route_get("203.0.113.5").find("dev " + device_), std::string::npos);  // the loop
  {
    EndpointRoutes routes;
    EndpointRouteRequest request{ip("203.0.113.5"), ActiveUplink{wan1_, ip("192.0.2.1")}, true, tunnel, 0};
    std::vector<EndpointRouteReport> reports = routes.refresh({request});
    EXPECT_TRUE(reports[0].problems.empty()) << reports[0].problems.front();
    EXPECT_EQ(reports[0].guard, "203.0.113.5 via 192.0.2.1 dev wan1 table main proto static");
    EXPECT_NE(route_get("203.0.113.5").find("dev wan1"), std::string::npos);
    // Other destinations still go through the tunnel.
    EXPECT_NE(route_get("203.0.113.6").find("dev " + device_), std::string::npos);
    // A second refresh keeps the one guard; failover moves it.
    request.active = ActiveUplink{wan2_, ip("198.51.100.1")};
    reports = routes.refresh({request});
    EXPECT_EQ(reports[0].guard, "203.0.113.5 via 198.51.100.1 dev wan2 table main proto static");
    EXPECT_NE(route_get("203.0.113.5").find("dev wan2"), std::string::npos);
  }
  EXPECT_NE(route_get("203.0.113.5").find("dev " + device_), std::string::npos);  // guard removed at stop
}

// ---- the manager, without a datapath ------------------------------------------------------------

TEST_F(WireguardTest, ManagerReportsPeersPolicyUplinkAndRoutes) {
  ASSERT_TRUE(start_wireguard_go());
  const std::string a = key();
  const std::string b = key();
  wg("set " + device_ + " listen-port 0 peer " + a +
     " endpoint 203.0.113.5:51820 allowed-ips 10.9.0.1/32 peer " + b + " allowed-ips 10.9.0.2/32");
  router_ip("route add 203.0.113.5 via 198.51.100.1 dev wan2 proto static metric 20");
  config::Config cfg = config::parse(
      "config interface 'wan'\n\toption enabled '1'\n\toption device 'wan1'\n"
      "config interface 'wanb'\n\toption enabled '1'\n\toption device 'wan2'\n"
      "config member 'm1'\n\toption interface 'wan'\n"
      "config member 'm2'\n\toption interface 'wanb'\n\toption metric '2'\n"
      "config policy 'failover'\n\tlist use_member 'm1'\n\tlist use_member 'm2'\n"
      "config rule 'default_rule_v4'\n\toption dest_ip '0.0.0.0/0'\n\toption use_policy 'failover'\n"
      "config wireguard 'static'\n\toption device 'h7wgnone'\n\tlist endpoint '198.51.100.200:51820'\n"
      "\tlist endpoint 'vpn.example.com:51820'\n",
      "mwan3");
  uint32_t active = 1;
  std::vector<std::pair<uint32_t, int>> asked;
  auto resolver = [&](uint32_t policy_id, int family, const wg_endpoint_key&) {
    asked.emplace_back(policy_id, family);
    return active;
  };
  {
    WireguardManager manager(cfg, {{"failover", 3}}, nullptr, resolver, uapi_dir_);
    manager.set_uplinks({UplinkInfo{1, "wan", "wan1", wan1_, AF_INET, ip("192.0.2.1"), true},
                         UplinkInfo{2, "wanb", "wan2", wan2_, AF_INET, ip("198.51.100.1"), true}});
    manager.poll();
    nlohmann::json json = manager.json();
    ASSERT_EQ(json["peers"].size(), 3U) << json.dump(2);
    nlohmann::json pa;
    nlohmann::json pb;
    nlohmann::json ps;
    for (const auto& p : json["peers"]) {
      if (p["peer"] == a) pa = p;
      if (p["peer"] == b) pb = p;
      if (p["source"] == "config") ps = p;
    }
    EXPECT_EQ(pa["device"], device_);
    EXPECT_EQ(pa["endpoint"], "203.0.113.5:51820");
    EXPECT_EQ(pa["policy"], "failover");
    EXPECT_EQ(pa["policy_from"], "rule 'default_rule_v4'");
    EXPECT_EQ(pa["uplink"], "wan");
    EXPECT_EQ(pa["uplink_device"], "wan1");
    EXPECT_EQ(pa["steered_packets"], 0);
    ASSERT_EQ(pa["fixed_routes"].size(), 1U) << pa.dump(2);
    EXPECT_EQ(pb["endpoint"], "none");
    EXPECT_EQ(pb["uplink"], nullptr);
    EXPECT_EQ(ps["endpoint"], "198.51.100.200:51820");
    EXPECT_EQ(ps["device"], "h7wgnone");
    EXPECT_EQ(json["problems"].size(), 1U) << json.dump(2);  // the host name, not resolved
    EXPECT_FALSE(asked.empty());
    EXPECT_EQ(asked.front().first, 3U);
    EXPECT_EQ(normalize_lines(router_ip("route show 203.0.113.5")),
              "203.0.113.5 via 192.0.2.1 dev wan1 proto static metric 20\n");

    // Failover: the policy now sends the endpoint by wanb; routes follow on set_uplinks().
    active = 2;
    manager.set_uplinks({UplinkInfo{1, "wan", "wan1", wan1_, AF_INET, ip("192.0.2.1"), false},
                         UplinkInfo{2, "wanb", "wan2", wan2_, AF_INET, ip("198.51.100.1"), true}});
    EXPECT_EQ(normalize_lines(router_ip("route show 203.0.113.5")),
              "203.0.113.5 via 198.51.100.1 dev wan2 proto static metric 20\n");

    // The device vanishes: no throw, its peers go, their routes are put back.
    stop_wireguard_go();
    ASSERT_TRUE(wait_until([&] { return if_nametoindex(device_.c_str()) == 0; }));
    manager.poll();
    EXPECT_EQ(manager.json()["peers"].size(), 1U);  // the static endpoint stays
  }
  EXPECT_EQ(normalize_lines(router_ip("route show 203.0.113.5")),
            "203.0.113.5 via 198.51.100.1 dev wan2 proto static metric 20\n");
}

// ---- the manager with the real steering program --------------------------------------------------

// The field report in miniature: wireguard-go's handshakes follow netifd's stale pin through wan2
// (fix_endpoint_routes off) while the policy's active uplink is wan1; the manager puts the
// discovered endpoint in wg_endpoints, and the steering program on wan2 moves the packets.
TEST_F(WireguardTest, ManagerFeedsSteeringProgramWithDiscoveredEndpoint) {
  const std::string pin_dir = "/sys/fs/bpf/" + base_;
  if (mkdir(pin_dir.c_str(), 0700) != 0) {
    GTEST_SKIP() << "cannot create " << pin_dir << " (" << std::strerror(errno)
                 << "): is bpffs mounted at /sys/fs/bpf?";
  }
  struct PinCleanup {
    std::string dir;
    ~PinCleanup() {
      unlink((dir + "/" + UPLINKD_MAP_POLICIES).c_str());
      rmdir(dir.c_str());
    }
  } cleanup{pin_dir};
  ASSERT_TRUE(start_wireguard_go());
  router_ip("route add 203.0.113.5 via 198.51.100.1 dev wan2 proto static metric 20");
  must_run("ip netns exec " + base_ + " sh -c 'wg genkey > /tmp/" + base_ + ".key'");
  const std::string peer = key();
  wg("set " + device_ + " private-key /tmp/" + base_ + ".key peer " + peer +
     " endpoint 203.0.113.5:51820 persistent-keepalive 1 allowed-ips 10.9.0.1/32");
  std::filesystem::remove("/tmp/" + base_ + ".key");
  config::Config cfg = config::parse(
      "config interface 'wan'\n\toption enabled '1'\n\toption device 'wan1'\n"
      "config interface 'wanb'\n\toption enabled '1'\n\toption device 'wan2'\n"
      "config member 'm1'\n\toption interface 'wan'\n"
      "config member 'm2'\n\toption interface 'wanb'\n\toption metric '2'\n"
      "config policy 'failover'\n\tlist use_member 'm1'\n\tlist use_member 'm2'\n"
      "config wireguard 'wg'\n\toption device '" +
          device_ +
          "'\n\toption policy 'failover'\n"
          "\toption fix_endpoint_routes '0'\n",
      "mwan3");
  {
    datapath::WgSteering steering(pin_dir);
    // The policy as the classifier publishes it: wan (id 1) alone online.
    int policies = bpf_obj_get((pin_dir + "/" + UPLINKD_MAP_POLICIES).c_str());
    ASSERT_GE(policies, 0);
    policy_entry entry{};
    entry.n_members = 1;
    entry.threshold[0] = 0xFFFFFFFF;
    entry.uplink_id[0] = 1;
    uint32_t slot = UPLINKD_POLICY_SLOT(3, 4);
    ASSERT_EQ(bpf_map_update_elem(policies, &slot, &entry, BPF_ANY), 0);
    close(policies);
    ASSERT_EQ(steering.write_uplink_egress(
                  1, {wan1_, ip("192.0.2.2"), ip("192.0.2.1"), std::nullopt, std::nullopt}),
              0);
    steering.attach(wan2_, "wan2", false);

    WireguardManager manager(cfg, {{"failover", 3}}, &steering, pinned_policy_resolver(pin_dir), uapi_dir_);
    manager.set_uplinks({UplinkInfo{1, "wan", "wan1", wan1_, AF_INET, ip("192.0.2.1"), true},
                         UplinkInfo{2, "wanb", "wan2", wan2_, AF_INET, ip("198.51.100.1"), true}});
    router_ip("link set " + device_ + " up");  // handshakes start (persistent keepalive)
    manager.poll();
    nlohmann::json peer_json;
    bool steered = wait_until(
        [&] {
          peer_json = manager.json()["peers"][0];
          return peer_json["steered_packets"].get<uint64_t>() > 0;
        },
        std::chrono::milliseconds(15000));
    EXPECT_TRUE(steered) << peer_json.dump(2);
    EXPECT_EQ(peer_json["uplink"], "wan");
    ASSERT_EQ(peer_json["stale_routes"].size(), 1U) << peer_json.dump(2);
    EXPECT_EQ(normalize_lines(router_ip("route show 203.0.113.5")),
              "203.0.113.5 via 198.51.100.1 dev wan2 proto static metric 20\n");  // fix off: untouched

    EXPECT_EQ(manager.steered_endpoints(), 1U);  // the daemon keeps wg_steer attached

    // The peer goes: its endpoint leaves the map, and the daemon detaches wg_steer on none left.
    datapath::WgEndpoint endpoint{ip("203.0.113.5"), 51820};
    wg("set " + device_ + " peer " + peer + " remove");
    manager.poll();
    EXPECT_EQ(manager.steered_endpoints(), 0U);
    EXPECT_FALSE(steering.remove_endpoint(endpoint));  // the poll took it out of the map
    manager.stop();
    EXPECT_EQ(manager.steered_endpoints(), 0U);
  }
}

}  // namespace
}  // namespace uplinkd::wireguard
