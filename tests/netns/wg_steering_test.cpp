// WgSteering against a real kernel: a router with two uplinks to two ISPs that both route to a
// server, where a real UDP socket receives what the router sends to the WireGuard endpoint.
//
//   router  u1 10.61.1.1/24 2001:db8:61::1/64  ---  isp1 i1r 10.61.1.2  2001:db8:61::2
//                                                    isp1 i1s 10.61.2.1  2001:db8:612::1  ---  server
//                                                    s1 10.61.2.2  2001:db8:612::2
//           u2 10.62.1.1/24 2001:db8:62::1/64  ---  isp2 i2r 10.62.1.2  2001:db8:62::2
//                                                    isp2 i2s 10.62.2.1  2001:db8:622::1  ---  server
//                                                    s2 10.62.2.2  2001:db8:622::2
//   server lo: the endpoint 203.0.113.7/32, 2001:db8:ff::7/128
//
// The router has a netifd-style host route to the endpoint via the backup (u2), and a socket bound
// to u2's address sends from the WireGuard port. With uplink 1 active, the server must receive the
// datagram from u1's address on s1. Checksums: u1 has TX checksum offload off, so the kernel
// finishes every checksum in software as the packet leaves u1, and the server's UDP stack
// verifies it (a wrong one is dropped, not delivered). Two variants per family: u2 with offload
// on (the socket's skb is CHECKSUM_PARTIAL: the program must fix the pseudo-header seed) and off
// (a full checksum the program updates incrementally).
//
// Namespaces h6wg-<pid>-<n>-{r,isp1,isp2,srv}, deleted in TearDown; the pin directory
// /sys/fs/bpf/uplinkd-h6wg-<pid> likewise. Runs as root.
#include "datapath/wg_steering.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include "datapath/datapath.h"
#include "netns_fixture.h"

namespace uplinkd::datapath {
namespace {

using uplinkd::testing::enter_netns;
using uplinkd::testing::must_run;
using uplinkd::testing::run_command;

constexpr uint16_t kUplink1 = 1, kUplink2 = 2;
constexpr uint32_t kPolicy = 5;
constexpr uint32_t kEndpointId = 9;
constexpr uint16_t kWgPort = 51820;

struct Family {
  const char* name;
  int af;
  const char* u1;
  const char* u2;
  const char* gw1;
  const char* gw2;
  const char* endpoint;
};

constexpr Family kV4{"IPv4", AF_INET, "10.61.1.1", "10.62.1.1", "10.61.1.2", "10.62.1.2", "203.0.113.7"};
constexpr Family kV6{"IPv6",           AF_INET6,         "2001:db8:61::1", "2001:db8:62::1",
                     "2001:db8:61::2", "2001:db8:62::2", "2001:db8:ff::7"};

IpAddress addr(const char* text) { return *IpAddress::parse(text); }

// What the server's socket got.
struct Received {
  std::string source;
  int ifindex = 0;
};

// A UDP socket on the WireGuard port in the server namespace, reporting source and ingress device.
class Receiver {
 public:
  Receiver(const std::string& netns, int af) {
    const int original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (original < 0 || enter_netns("/run/netns/" + netns) != 0) return;
    fd_ = socket(af, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    const int one = 1;
    if (af == AF_INET) {
      setsockopt(fd_, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
      sockaddr_in any{};
      any.sin_family = AF_INET;
      any.sin_port = htons(kWgPort);
      if (bind(fd_, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) close_fd();
    } else {
      setsockopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
      setsockopt(fd_, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
      sockaddr_in6 any{};
      any.sin6_family = AF_INET6;
      any.sin6_port = htons(kWgPort);
      if (bind(fd_, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) close_fd();
    }
    s1_ = static_cast<int>(if_nametoindex("s1"));
    s2_ = static_cast<int>(if_nametoindex("s2"));
    setns(original, CLONE_NEWNET);
    close(original);
  }
  ~Receiver() { close_fd(); }
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  [[nodiscard]] bool ok() const { return fd_ >= 0; }
  [[nodiscard]] int s1() const { return s1_; }
  [[nodiscard]] int s2() const { return s2_; }

  std::optional<Received> wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    char payload[2048];
    sockaddr_storage from{};
    char control[256];
    iovec iov{payload, sizeof payload};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    if (recvmsg(fd_, &msg, 0) < 0) return std::nullopt;
    Received r;
    char text[INET6_ADDRSTRLEN] = {};
    if (from.ss_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&from)->sin_addr, text, sizeof text);
    } else {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&from)->sin6_addr, text, sizeof text);
    }
    r.source = text;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
        r.ifindex = reinterpret_cast<in_pktinfo*>(CMSG_DATA(c))->ipi_ifindex;
      } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
        r.ifindex = static_cast<int>(reinterpret_cast<in6_pktinfo*>(CMSG_DATA(c))->ipi6_ifindex);
      }
    }
    return r;
  }

 private:
  void close_fd() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
  int s1_ = 0, s2_ = 0;
};

// TX checksum offload of a device in the calling thread's namespace (what `ethtool -K dev tx`
// sets), through the ethtool ioctl: this machine has no ethtool binary.
int set_tx_checksum(const char* device, bool on) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ethtool_value value{};
  value.cmd = ETHTOOL_STXCSUM;
  value.data = on ? 1 : 0;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, device, IFNAMSIZ - 1);
  ifr.ifr_data = reinterpret_cast<char*>(&value);
  const int err = ioctl(fd, SIOCETHTOOL, &ifr) == 0 ? 0 : -errno;
  close(fd);
  return err;
}

class WgSteeringTest : public ::testing::TestWithParam<bool /* u2 TX checksum offload */> {
 protected:
  void SetUp() override {
    static int counter = 0;
    base_ = "h6wg-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    original_netns_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(original_netns_, 0);
    if (!is_bpffs("/sys/fs/bpf")) {
      GTEST_SKIP() << "no BPF filesystem at /sys/fs/bpf: mount -t bpf bpf /sys/fs/bpf";
    }
    for (const char* role : {"r", "isp1", "isp2", "srv"}) {
      const std::string ns = base_ + "-" + role;
      ASSERT_EQ(run_command("ip netns add " + ns).status, 0) << "ip netns add " << ns << " (root needed)";
      namespaces_.push_back(ns);
      must_run("ip netns exec " + ns +
               " sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0"
               " net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0");
      ip(role, "link set lo up");
    }
    for (const char* isp : {"isp1", "isp2"}) {
      must_run("ip netns exec " + ns(isp) +
               " sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
    }
    ASSERT_NO_FATAL_FAILURE(link("r", "u1", "isp1", "i1r", "10.61.1.1/24", "10.61.1.2/24",
                                 "2001:db8:61::1/64", "2001:db8:61::2/64"));
    ASSERT_NO_FATAL_FAILURE(link("r", "u2", "isp2", "i2r", "10.62.1.1/24", "10.62.1.2/24",
                                 "2001:db8:62::1/64", "2001:db8:62::2/64"));
    ASSERT_NO_FATAL_FAILURE(link("isp1", "i1s", "srv", "s1", "10.61.2.1/24", "10.61.2.2/24",
                                 "2001:db8:612::1/64", "2001:db8:612::2/64"));
    ASSERT_NO_FATAL_FAILURE(link("isp2", "i2s", "srv", "s2", "10.62.2.1/24", "10.62.2.2/24",
                                 "2001:db8:622::1/64", "2001:db8:622::2/64"));
    ip("srv", "addr add 203.0.113.7/32 dev lo");
    ip("srv", "addr add 2001:db8:ff::7/128 dev lo");
    ip("srv", "route add 10.61.1.0/24 via 10.61.2.1");
    ip("srv", "route add 10.62.1.0/24 via 10.62.2.1");
    ip("srv", "-6 route add 2001:db8:61::/64 via 2001:db8:612::1");
    ip("srv", "-6 route add 2001:db8:62::/64 via 2001:db8:622::1");
    ip("isp1", "route add 203.0.113.7/32 via 10.61.2.2");
    ip("isp2", "route add 203.0.113.7/32 via 10.62.2.2");
    ip("isp1", "-6 route add 2001:db8:ff::7/128 via 2001:db8:612::2");
    ip("isp2", "-6 route add 2001:db8:ff::7/128 via 2001:db8:622::2");
    // netifd's pinned host route: the endpoint via the backup.
    ip("r", "route add 203.0.113.7/32 via 10.62.1.2 dev u2");
    ip("r", "-6 route add 2001:db8:ff::7/128 via 2001:db8:62::2 dev u2");
    // A veth drops what it is given until link watch has activated its queue: wait until the
    // server answers by both paths (which also resolves every neighbour on the way).
    for (const char* from : {"10.61.1.1", "10.62.1.1", "2001:db8:61::1", "2001:db8:62::1"}) {
      const char* to = std::strchr(from, ':') != nullptr ? "2001:db8:ff::7" : "203.0.113.7";
      const std::string ping = "ip netns exec " + ns("r") + " ping -c1 -W1 -I " + from + " " + to;
      ASSERT_TRUE(uplinkd::testing::wait_until([&] { return run_command(ping).status == 0; }))
          << ping << " never answered";
    }
    // The gateways' neighbour entries resolved, as uplinkd's probes through every uplink keep them
    // (run_unresolved_gateway flushes one on purpose).
    for (const char* gw : {"10.61.1.2", "10.62.1.2", "2001:db8:61::2", "2001:db8:62::2"}) {
      const std::string ping = "ip netns exec " + ns("r") + " ping -c1 -W1 " + gw;
      ASSERT_TRUE(uplinkd::testing::wait_until([&] { return run_command(ping).status == 0; })) << ping;
    }
    for (const char* isp : {"isp1", "isp2"}) {
      for (const char* to : {"203.0.113.7", "2001:db8:ff::7"}) {
        const std::string ping = "ip netns exec " + ns(isp) + " ping -c1 -W1 " + to;
        ASSERT_TRUE(uplinkd::testing::wait_until([&] { return run_command(ping).status == 0; })) << ping;
      }
    }

    pin_dir_ = "/sys/fs/bpf/uplinkd-h6wg-" + std::to_string(getpid());
    ASSERT_TRUE(mkdir(pin_dir_.c_str(), 0700) == 0 || errno == EEXIST)
        << pin_dir_ << ": " << std::strerror(errno);
    ASSERT_EQ(enter_netns("/run/netns/" + ns("r")), 0);
    // u1 finishes every checksum in software; u2 as the parameter says.
    ASSERT_EQ(set_tx_checksum("u1", false), 0) << "ethtool ioctl on u1";
    ASSERT_EQ(set_tx_checksum("u2", GetParam()), 0) << "ethtool ioctl on u2";

    steering_.emplace(pin_dir_);
    for (const char* dev : {"u1", "u2"}) {
      steering_->attach(static_cast<int>(if_nametoindex(dev)), dev, false);
    }
    UplinkEgressInfo one{static_cast<int>(if_nametoindex("u1")), addr(kV4.u1), addr(kV4.gw1), addr(kV6.u1),
                         addr(kV6.gw1)};
    UplinkEgressInfo two{static_cast<int>(if_nametoindex("u2")), addr(kV4.u2), addr(kV4.gw2), addr(kV6.u2),
                         addr(kV6.gw2)};
    ASSERT_EQ(steering_->write_uplink_egress(kUplink1, one), 0);
    ASSERT_EQ(steering_->write_uplink_egress(kUplink2, two), 0);
    policies_fd_ = bpf_obj_get((pin_dir_ + "/" + UPLINKD_MAP_POLICIES).c_str());
    ASSERT_GE(policies_fd_, 0) << "the policies map is pinned by WgSteering when no classifier did";
  }

  void TearDown() override {
    steering_.reset();
    if (policies_fd_ >= 0) close(policies_fd_);
    unlink((pin_dir_ + "/" + UPLINKD_MAP_POLICIES).c_str());
    if (!pin_dir_.empty()) {
      EXPECT_EQ(rmdir(pin_dir_.c_str()), 0) << pin_dir_ << " not empty or missing";
    }
    if (original_netns_ >= 0) {
      EXPECT_EQ(setns(original_netns_, CLONE_NEWNET), 0);
      close(original_netns_);
    }
    for (const std::string& n : namespaces_) EXPECT_EQ(run_command("ip netns del " + n).status, 0) << n;
  }

  std::string ns(const char* role) const { return base_ + "-" + role; }
  void ip(const char* role, const std::string& args) { must_run("ip -n " + ns(role) + " " + args); }

  // A veth pair between two namespaces with addresses, up.
  void link(const char* a, const char* dev_a, const char* b, const char* dev_b, const char* a4,
            const char* b4, const char* a6, const char* b6) {
    ip(a, std::string("link add ") + dev_a + " type veth peer name " + dev_b + " netns " + ns(b));
    ip(a, std::string("addr add ") + a4 + " dev " + dev_a);
    ip(b, std::string("addr add ") + b4 + " dev " + dev_b);
    ip(a, std::string("addr add ") + a6 + " dev " + dev_a + " nodad");
    ip(b, std::string("addr add ") + b6 + " dev " + dev_b + " nodad");
    ip(a, std::string("link set ") + dev_a + " up");
    ip(b, std::string("link set ") + dev_b + " up");
  }

  // The endpoint's policy: members in order, one uplink each taking every hash.
  void set_policy(std::initializer_list<uint16_t> uplinks) {
    policy_entry p{};
    for (uint16_t id : uplinks) {
      p.uplink_id[p.n_members] = id;
      p.mark[p.n_members] = static_cast<uint32_t>(id) << 8;
      p.threshold[p.n_members] = 0xffffffffu;
      p.n_members++;
    }
    for (uint8_t family : {4, 6}) {
      uint32_t slot = UPLINKD_POLICY_SLOT(kPolicy, family);
      ASSERT_EQ(bpf_map_update_elem(policies_fd_, &slot, &p, BPF_ANY), 0);
    }
  }

  // One datagram from u2's address and the WireGuard port to the endpoint, by the pinned route.
  void send_from_backup(const Family& f) { send_from(f, f.u2); }

  // The same from `source` (an address of the router), by the pinned route through u2 or, given
  // `device`, out of that device whatever the routes say (wireguard-go pins its socket's packets
  // to the interface of its cached source this way, with IP_PKTINFO).
  void send_from(const Family& f, const char* source, const char* device = nullptr) {
    const int fd = socket(f.af, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    if (device != nullptr) {
      ASSERT_EQ(
          setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, device, static_cast<socklen_t>(std::strlen(device))), 0)
          << std::strerror(errno);
    }
    sockaddr_storage local{}, remote{};
    socklen_t len = 0;
    if (f.af == AF_INET) {
      auto* l = reinterpret_cast<sockaddr_in*>(&local);
      auto* r = reinterpret_cast<sockaddr_in*>(&remote);
      l->sin_family = r->sin_family = AF_INET;
      l->sin_port = r->sin_port = htons(kWgPort);
      inet_pton(AF_INET, source, &l->sin_addr);
      inet_pton(AF_INET, f.endpoint, &r->sin_addr);
      len = sizeof(sockaddr_in);
    } else {
      auto* l = reinterpret_cast<sockaddr_in6*>(&local);
      auto* r = reinterpret_cast<sockaddr_in6*>(&remote);
      l->sin6_family = r->sin6_family = AF_INET6;
      l->sin6_port = r->sin6_port = htons(kWgPort);
      inet_pton(AF_INET6, source, &l->sin6_addr);
      inet_pton(AF_INET6, f.endpoint, &r->sin6_addr);
      len = sizeof(sockaddr_in6);
    }
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&local), len), 0) << std::strerror(errno);
    const char payload[148] = "a WireGuard-sized handshake initiation";
    EXPECT_EQ(sendto(fd, payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&remote), len),
              static_cast<ssize_t>(sizeof payload))
        << std::strerror(errno);
    close(fd);
  }

  void run_family(const Family& f) {
    SCOPED_TRACE(f.name);
    const WgEndpoint endpoint{addr(f.endpoint), kWgPort};
    ASSERT_EQ(steering_->write_endpoint(endpoint, kPolicy, kEndpointId), 0);
    Receiver server(ns("srv"), f.af);
    ASSERT_TRUE(server.ok()) << "server socket";

    // Uplink 1 active: steered to u1, with u1's address, through isp1.
    ASSERT_NO_FATAL_FAILURE(set_policy({kUplink1, kUplink2}));
    ASSERT_NO_FATAL_FAILURE(send_from_backup(f));
    std::optional<Received> got = server.wait();
    ASSERT_TRUE(got.has_value())
        << "nothing arrived: dropped (a bad checksum?) or misrouted; counters: steered "
        << steering_->counters(kEndpointId).steered_packets << ", failed "
        << steering_->counters(kEndpointId).failed_packets;
    EXPECT_EQ(got->source, f.u1);
    EXPECT_EQ(got->ifindex, server.s1()) << "arrived by the uplink-2 path";
    WgEndpointCounters c = steering_->counters(kEndpointId);
    EXPECT_EQ(c.steered_packets, 1u);
    EXPECT_GT(c.steered_bytes, 148u);
    EXPECT_EQ(c.failed_packets, 0u);
    // The redirected packet passes u1's egress program too, tagged: not counted again.
    EXPECT_EQ(c.passed_packets, 0u);

    // Uplink 1 offline: the policy has uplink 2 only, where the packet leaves anyway.
    ASSERT_NO_FATAL_FAILURE(set_policy({kUplink2}));
    ASSERT_NO_FATAL_FAILURE(send_from_backup(f));
    got = server.wait();
    ASSERT_TRUE(got.has_value()) << "nothing arrived by the backup";
    EXPECT_EQ(got->source, f.u2);
    EXPECT_EQ(got->ifindex, server.s2());
    c = steering_->counters(kEndpointId);
    EXPECT_EQ(c.steered_packets, 1u);
    EXPECT_EQ(c.passed_packets, 1u);

    // No member online: left alone as well.
    ASSERT_NO_FATAL_FAILURE(set_policy({}));
    ASSERT_NO_FATAL_FAILURE(send_from_backup(f));
    got = server.wait();
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->source, f.u2);
    EXPECT_EQ(steering_->counters(kEndpointId).passed_packets, 2u);
    EXPECT_TRUE(steering_->remove_endpoint(endpoint));
  }

  // The move to u1 while u1's gateway has no neighbour entry (flushed, as after a link flap or
  // when the entry failed while u1 was down). The router forwards (bpf_fib_lookup() answers only
  // for a forwarding device) and has netifd's default routes of both uplinks in its main table;
  // the pinned host route is gone (route hygiene replaces it), the datagrams leave by u2 because
  // their socket is bound to it.
  void run_unresolved_gateway(const Family& f) {
    SCOPED_TRACE(f.name);
    const bool v6 = f.af == AF_INET6;
    must_run("ip netns exec " + ns("r") +
             " sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1");
    const std::string family = v6 ? "-6 " : "";
    ip("r", family + "route del " + f.endpoint);
    ip("r", family + "route add default via " + f.gw1 + " dev u1 metric 10");
    ip("r", family + "route add default via " + f.gw2 + " dev u2 metric 20");
    const WgEndpoint endpoint{addr(f.endpoint), kWgPort};
    ASSERT_EQ(steering_->write_endpoint(endpoint, kPolicy, kEndpointId), 0);
    Receiver server(ns("srv"), f.af);
    ASSERT_TRUE(server.ok()) << "server socket";
    ASSERT_NO_FATAL_FAILURE(set_policy({kUplink1, kUplink2}));

    // The first packet after the flush is steered and arrives by u1, from u1's address.
    ip("r", family + "neigh del " + f.gw1 + " dev u1");
    ASSERT_NO_FATAL_FAILURE(send_from(f, f.u2, "u2"));
    std::optional<Received> got = server.wait();
    ASSERT_TRUE(got.has_value()) << "the first packet after the flush was lost; counters: steered "
                                 << steering_->counters(kEndpointId).steered_packets << ", passed "
                                 << steering_->counters(kEndpointId).passed_packets;
    EXPECT_EQ(got->source, f.u1);
    EXPECT_EQ(got->ifindex, server.s1());
    EXPECT_EQ(steering_->counters(kEndpointId).steered_packets, 1u);

    // Without a route of the kernel's through u1's gateway the packet cannot be queued on it: it
    // leaves as it came (by u2, from u2's address) and arrives all the same.
    ip("r", family + "route del default via " + f.gw1 + " dev u1 metric 10");
    ip("r", family + "neigh del " + f.gw1 + " dev u1");
    ASSERT_NO_FATAL_FAILURE(send_from(f, f.u2, "u2"));
    got = server.wait();
    ASSERT_TRUE(got.has_value()) << "the packet left as it came was lost";
    EXPECT_EQ(got->source, f.u2);
    EXPECT_EQ(got->ifindex, server.s2());
    EXPECT_EQ(steering_->counters(kEndpointId).passed_packets, 1u);
    EXPECT_TRUE(steering_->remove_endpoint(endpoint));
  }

  // u2 active, the packet leaves by u2 but from u1's address (kernel WireGuard's cached IPv6 source
  // after its route moved): the source is put right in place, and the reply would come to u2.
  void run_stale_source(const Family& f) {
    SCOPED_TRACE(f.name);
    const WgEndpoint endpoint{addr(f.endpoint), kWgPort};
    ASSERT_EQ(steering_->write_endpoint(endpoint, kPolicy, kEndpointId), 0);
    Receiver server(ns("srv"), f.af);
    ASSERT_TRUE(server.ok()) << "server socket";
    ASSERT_NO_FATAL_FAILURE(set_policy({kUplink2}));
    ASSERT_NO_FATAL_FAILURE(send_from(f, f.u1));
    std::optional<Received> got = server.wait();
    ASSERT_TRUE(got.has_value()) << "nothing arrived (a bad checksum?)";
    EXPECT_EQ(got->source, f.u2);
    EXPECT_EQ(got->ifindex, server.s2());
    EXPECT_EQ(steering_->counters(kEndpointId).steered_packets, 1u);
    EXPECT_EQ(steering_->counters(kEndpointId).failed_packets, 0u);
    EXPECT_TRUE(steering_->remove_endpoint(endpoint));
  }

  std::string base_;
  std::vector<std::string> namespaces_;
  std::string pin_dir_;
  int original_netns_ = -1;
  int policies_fd_ = -1;
  std::optional<WgSteering> steering_;
};

TEST_P(WgSteeringTest, SteersIpv4ToActiveUplink) { run_family(kV4); }

TEST_P(WgSteeringTest, SteersIpv6ToActiveUplink) { run_family(kV6); }

TEST_P(WgSteeringTest, FirstIpv4PacketToUnresolvedGatewayArrives) { run_unresolved_gateway(kV4); }

TEST_P(WgSteeringTest, FirstIpv6PacketToUnresolvedGatewayArrives) { run_unresolved_gateway(kV6); }

TEST_P(WgSteeringTest, StaleIpv4SourceOnActiveUplinkIsFixed) { run_stale_source(kV4); }

TEST_P(WgSteeringTest, StaleIpv6SourceOnActiveUplinkIsFixed) { run_stale_source(kV6); }

INSTANTIATE_TEST_SUITE_P(Offload, WgSteeringTest, ::testing::Bool(), [](const auto& info) {
  return std::string(info.param ? "PartialChecksum" : "SoftwareChecksum");
});

TEST(WgSteeringPlain, ActiveUplinkMatchesTheProgramsPick) {
  policy_entry p{};
  EXPECT_EQ(WgSteering::active_uplink(p, {}), 0);
  p.n_members = 2;
  p.uplink_id[0] = 4;
  p.uplink_id[1] = 7;
  p.threshold[0] = 0;  // almost every hash goes to the second member
  p.threshold[1] = 0xffffffffu;
  const wg_endpoint_key key = WgSteering::endpoint_key({*IpAddress::parse("203.0.113.7"), 51820});
  EXPECT_EQ(key.family, 4);
  EXPECT_EQ(key.port, htons(51820));
  EXPECT_EQ(WgSteering::active_uplink(p, key), 7);
  p.threshold[0] = 0xffffffffu;
  EXPECT_EQ(WgSteering::active_uplink(p, key), 4);
}

TEST(WgSteeringPlain, MissingPinDirectoryIsNamed) {
  try {
    WgSteering steering("/sys/fs/bpf/uplinkd-h6wg-does-not-exist");
    FAIL() << "constructed without a pin directory";
  } catch (const WgSteeringError& e) {
    EXPECT_NE(std::string(e.what()).find("/sys/fs/bpf/uplinkd-h6wg-does-not-exist"), std::string::npos)
        << e.what();
  }
}

// A restart keeps the steering filters while no daemon runs. The next daemon's steering, which
// never attached them, takes one away when no endpoint needs it any more (the daemon attaches
// wg_steer only while wg_endpoints has an endpoint), and says whether one is there.
TEST(WgSteeringPlain, DetachRemovesTheFilterAPredecessorLeft) {
  if (!is_bpffs("/sys/fs/bpf")) GTEST_SKIP() << "no BPF filesystem at /sys/fs/bpf";
  const std::string ns = "h6wgp-" + std::to_string(getpid());
  ASSERT_EQ(run_command("ip netns add " + ns).status, 0) << "ip netns add " << ns << " (root needed)";
  const std::string pin_dir = "/sys/fs/bpf/uplinkd-h6wgp-" + std::to_string(getpid());
  const int original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  struct Cleanup {
    std::string ns, pin_dir;
    int original;
    ~Cleanup() {
      unlink((pin_dir + "/" + UPLINKD_MAP_POLICIES).c_str());
      rmdir(pin_dir.c_str());
      if (original >= 0) {
        setns(original, CLONE_NEWNET);
        close(original);
      }
      run_command("ip netns del " + ns);
    }
  } cleanup{ns, pin_dir, original};
  ASSERT_GE(original, 0);
  must_run("ip -n " + ns + " link add w0 type veth peer name w1");
  must_run("ip -n " + ns + " link set w0 up");
  must_run("ip -n " + ns + " link set w1 up");
  ASSERT_TRUE(mkdir(pin_dir.c_str(), 0700) == 0 || errno == EEXIST)
      << pin_dir << ": " << std::strerror(errno);
  ASSERT_EQ(enter_netns("/run/netns/" + ns), 0);
  const int w0 = static_cast<int>(if_nametoindex("w0"));
  ASSERT_GT(w0, 0);
  const auto egress = [&] { return must_run("ip netns exec " + ns + " tc filter show dev w0 egress"); };

  WgSteering predecessor(pin_dir);
  EXPECT_FALSE(WgSteering::present(w0));
  predecessor.attach(w0, "w0", false);
  EXPECT_TRUE(WgSteering::present(w0));
  EXPECT_NE(egress().find("wg_steer"), std::string::npos) << egress();

  WgSteering next(pin_dir);
  EXPECT_FALSE(next.attached(w0));
  EXPECT_TRUE(WgSteering::present(w0)) << "a filter this instance did not attach is present all the same";
  next.detach(w0);
  EXPECT_FALSE(WgSteering::present(w0));
  EXPECT_EQ(egress(), "") << "the predecessor's filter is still on w0's egress";
  next.detach(w0);  // nothing there: nothing happens

  // Attached again, by the instance that detaches it: detach_all leaves no filter.
  next.attach(w0, "w0", false);
  EXPECT_TRUE(next.attached(w0));
  next.detach_all();
  EXPECT_FALSE(next.attached(w0));
  EXPECT_EQ(egress(), "");
}

// A restart keeps wg_endpoints: the next daemon's manager removes the endpoints no peer has now,
// or they would keep wg_steer on the uplinks for nobody.
TEST(WgSteeringPlain, RemoveEndpointsExceptKeepsOnlyThoseGiven) {
  if (!is_bpffs("/sys/fs/bpf")) GTEST_SKIP() << "no BPF filesystem at /sys/fs/bpf";
  const std::string pin_dir = "/sys/fs/bpf/uplinkd-h6wge-" + std::to_string(getpid());
  ASSERT_TRUE(mkdir(pin_dir.c_str(), 0700) == 0 || errno == EEXIST)
      << pin_dir << ": " << std::strerror(errno);
  struct Cleanup {
    std::string pin_dir;
    ~Cleanup() {
      unlink((pin_dir + "/" + UPLINKD_MAP_POLICIES).c_str());
      rmdir(pin_dir.c_str());
    }
  } cleanup{pin_dir};
  WgSteering steering(pin_dir);
  const WgEndpoint kept{addr("203.0.113.7"), 51820}, gone{addr("2001:db8:ff::7"), 51820},
      other_port{addr("203.0.113.7"), 51821};
  ASSERT_EQ(steering.write_endpoint(kept, kPolicy, 1), 0);
  ASSERT_EQ(steering.write_endpoint(gone, kPolicy, 2), 0);
  ASSERT_EQ(steering.write_endpoint(other_port, kPolicy, 3), 0);
  EXPECT_EQ(steering.remove_endpoints_except({kept}), 2U);
  EXPECT_EQ(steering.remove_endpoints_except({kept}), 0U);
  EXPECT_FALSE(steering.remove_endpoint(gone));
  EXPECT_FALSE(steering.remove_endpoint(other_port));
  EXPECT_TRUE(steering.remove_endpoint(kept));
  EXPECT_EQ(steering.remove_endpoints_except({}), 0U);
}

}  // namespace
}  // namespace uplinkd::datapath
