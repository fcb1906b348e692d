// A two-namespace lab for netns tests: "router" (the namespace under test, which the test
// thread enters) and "isp" (its peer), joined by a veth pair.
//
//   router: wan1  192.0.2.2/24  2001:db8:1::2/64
//   isp:    isp0  192.0.2.1/24  2001:db8:1::1/64,  lo 203.0.113.1/32  2001:db8:ff::1/128
//
// Only documentation prefixes; nothing in the root namespace is touched. Namespaces are named
// ulnet-<pid>-<n> and ulnet-<pid>-<n>-isp, deleted in TearDown (which gtest runs after a failed
// SetUp too); namespaces left by a crashed run (dead pid) are deleted at the next SetUp.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace uplinkd::testing {

struct CommandResult {
  int status = -1;     // exit status; -1 if the command could not run or was killed
  std::string output;  // stdout and stderr
};

inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    return result;
  }
  std::array<char, 4096> buffer{};
  size_t got = 0;
  while ((got = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.output.append(buffer.data(), got);
  }
  int status = pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Runs a command that must succeed; a failure is recorded (non-fatal) with its output.
inline std::string must_run(const std::string& command) {
  CommandResult result = run_command(command);
  EXPECT_EQ(result.status, 0) << command << "\n" << result.output;
  return result.output;
}

// Output lines without trailing blanks (iproute2 ends some lines with a space).
inline std::string normalize_lines(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  std::string out;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) {
      line.pop_back();
    }
    out += line + "\n";
  }
  return out;
}

// Polls `condition` until it holds or `timeout` passes; every wait in these tests is bounded.
inline bool wait_until(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// Moves the calling thread into the namespace at `path` (a /run/netns or /proc file).
inline int enter_netns(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return -errno;
  }
  int err = setns(fd, CLONE_NEWNET) == 0 ? 0 : -errno;
  close(fd);
  return err;
}

// One frame seen by a PacketCapture: the full Ethernet frame and the direction the kernel
// gives it (PACKET_HOST, PACKET_BROADCAST, PACKET_OUTGOING, ...).
struct Frame {
  std::vector<uint8_t> bytes;
  int packet_type = 0;
  [[nodiscard]] uint16_t ethertype() const {
    return bytes.size() < 14 ? 0 : uint16_t(bytes[12] << 8 | bytes[13]);
  }
};

// An AF_PACKET socket on a device of another namespace: it is opened inside that namespace and
// keeps seeing it after the thread returns to where it was.
class PacketCapture {
 public:
  PacketCapture(const std::string& netns, const std::string& device) {
    int original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (original < 0) {
      return;
    }
    if (enter_netns("/run/netns/" + netns) == 0) {
      open_on(device);
      setns(original, CLONE_NEWNET);
    }
    close(original);
  }
  ~PacketCapture() {
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  PacketCapture(const PacketCapture&) = delete;
  PacketCapture& operator=(const PacketCapture&) = delete;

  [[nodiscard]] bool ok() const { return fd_ >= 0; }

  // The first frame from now on that `wanted` accepts, or nullopt after `timeout`.
  std::optional<Frame> wait_for(const std::function<bool(const Frame&)>& wanted,
                                std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return std::nullopt;
      }
      pollfd readable{fd_, POLLIN, 0};
      if (poll(&readable, 1, static_cast<int>(left.count())) <= 0) {
        continue;
      }
      Frame frame;
      frame.bytes.resize(65536);
      sockaddr_ll from{};
      socklen_t from_size = sizeof from;
      ssize_t got = recvfrom(fd_, frame.bytes.data(), frame.bytes.size(), 0,
                             reinterpret_cast<sockaddr*>(&from), &from_size);
      if (got < 0) {
        continue;
      }
      frame.bytes.resize(static_cast<size_t>(got));
      frame.packet_type = from.sll_pkttype;
      if (wanted(frame)) {
        return frame;
      }
    }
  }

 private:
  void open_on(const std::string& device) {
    unsigned int ifindex = if_nametoindex(device.c_str());
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (ifindex == 0 || fd < 0) {
      if (fd >= 0) {
        close(fd);
      }
      return;
    }
    sockaddr_ll where{};
    where.sll_family = AF_PACKET;
    where.sll_protocol = htons(ETH_P_ALL);
    where.sll_ifindex = static_cast<int>(ifindex);
    if (bind(fd, reinterpret_cast<sockaddr*>(&where), sizeof where) != 0) {
      close(fd);
      return;
    }
    fd_ = fd;
  }
  int fd_ = -1;
};

class NetnsTest : public ::testing::Test {
 protected:
  static constexpr const char* kUplink = "wan1";
  static constexpr const char* kIspSide = "isp0";
  static constexpr const char* kRouterV4 = "192.0.2.2";
  static constexpr const char* kIspV4 = "192.0.2.1";
  static constexpr const char* kRouterV6 = "2001:db8:1::2";
  static constexpr const char* kIspV6 = "2001:db8:1::1";
  static constexpr const char* kFarV4 = "203.0.113.1";  // on the isp's lo: beyond the gateway
  static constexpr const char* kFarV6 = "2001:db8:ff::1";

  void SetUp() override {
    delete_namespaces_of_dead_runs();
    static std::atomic<int> counter{0};
    std::string base = "ulnet-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    original_netns_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(original_netns_, 0) << "cannot open this thread's network namespace: " << std::strerror(errno);
    ASSERT_EQ(run_command("ip netns add " + base).status, 0) << "ip netns add " << base << " (root needed)";
    router_ns_ = base;
    ASSERT_EQ(run_command("ip netns add " + base + "-isp").status, 0);
    isp_ns_ = base + "-isp";
    ASSERT_NO_FATAL_FAILURE(configure_namespaces());
    ASSERT_NO_FATAL_FAILURE(create_uplink());
    ASSERT_EQ(enter_netns("/run/netns/" + router_ns_), 0);
  }

  void TearDown() override {
    if (original_netns_ >= 0) {
      EXPECT_EQ(setns(original_netns_, CLONE_NEWNET), 0) << "cannot return to the original namespace";
      close(original_netns_);
      original_netns_ = -1;
    }
    for (const std::string& ns : {router_ns_, isp_ns_}) {
      if (!ns.empty()) {
        EXPECT_EQ(run_command("ip netns del " + ns).status, 0) << "ip netns del " << ns;
      }
    }
  }

  // `ip` run inside the router or isp namespace.
  std::string router_ip(const std::string& args) { return must_run("ip -n " + router_ns_ + " " + args); }
  std::string isp_ip(const std::string& args) { return must_run("ip -n " + isp_ns_ + " " + args); }

  // The veth pair with its addresses, up and settled (carrier seen, link-local addresses in
  // place), so that routes and addresses do not change under a test afterwards. Tests that
  // delete wan1 call it again to bring the uplink back.
  void create_uplink() {
    router_ip(std::string("link add ") + kUplink + " type veth peer name " + kIspSide + " netns " + isp_ns_);
    router_ip(std::string("addr add ") + kRouterV4 + "/24 dev " + kUplink);
    router_ip(std::string("addr add ") + kRouterV6 + "/64 dev " + kUplink + " nodad");
    isp_ip(std::string("addr add ") + kIspV4 + "/24 dev " + kIspSide);
    isp_ip(std::string("addr add ") + kIspV6 + "/64 dev " + kIspSide + " nodad");
    router_ip(std::string("link set ") + kUplink + " up");
    isp_ip(std::string("link set ") + kIspSide + " up");
    ASSERT_TRUE(wait_until([&] {
      return link_settled(router_ns_, kUplink) && link_settled(isp_ns_, kIspSide);
    })) << "veth pair did not come up within 5 s";
  }

  std::string router_ns_;
  std::string isp_ns_;

 private:
  void configure_namespaces() {
    // No DAD (addresses usable at once, tables stable); no reverse-path filter in the router,
    // whose main table has no route back to the far addresses (only the marked table has);
    // the isp answers ARP only for addresses of the asking interface, so a probe that misses
    // the gateway route cannot reach 203.0.113.1 by ARPing for it directly.
    for (const std::string& ns : {router_ns_, isp_ns_}) {
      must_run("ip netns exec " + ns +
               " sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"
               " net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0");
      must_run("ip -n " + ns + " link set lo up");
    }
    must_run("ip netns exec " + isp_ns_ + " sysctl -qw net.ipv4.conf.all.arp_ignore=1");
    isp_ip(std::string("addr add ") + kFarV4 + "/32 dev lo");
    isp_ip(std::string("addr add ") + kFarV6 + "/128 dev lo");
  }

  bool link_settled(const std::string& ns, const std::string& device) {
    CommandResult link = run_command("ip -n " + ns + " -o link show dev " + device);
    CommandResult local = run_command("ip -n " + ns + " -o -6 addr show dev " + device + " scope link");
    return link.output.find("state UP") != std::string::npos &&
           local.output.find("fe80::") != std::string::npos &&
           local.output.find("tentative") == std::string::npos;
  }

  // Namespaces named ulnet-<pid>-... whose process is gone were left by a crash.
  static void delete_namespaces_of_dead_runs() {
    std::istringstream list(run_command("ip netns list").output);
    std::string line;
    while (std::getline(list, line)) {
      std::string name = line.substr(0, line.find(' '));
      if (name.rfind("ulnet-", 0) != 0) {
        continue;
      }
      pid_t pid = static_cast<pid_t>(std::strtol(name.c_str() + 6, nullptr, 10));
      if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH) {
        run_command("ip netns del " + name);
      }
    }
  }

  int original_netns_ = -1;
};

}  // namespace uplinkd::testing
