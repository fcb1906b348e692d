// Per-packet cost of WireGuard endpoint steering (uplink_egress, tc egress on uplinks), measured by
// the kernel's own timer in BPF_PROG_TEST_RUN (opts.duration: nanoseconds per run, averaged over
// `repeat` runs).
//
//   pass-through, TCP: the common case on an uplink (parse, not UDP). repeat = 1e6, median of 7.
//   pass-through, not an endpoint: UDP to another address (parse + one hash miss). repeat = 1e6,
//                     median of 7.
//   pass-through, endpoint already on the active uplink: parse, endpoint hit, policy, uplink_egress,
//                     ifindex match, counter. repeat = 1e6, median of 7.
//   rewrite + redirect: an endpoint packet leaving by the backup, the fiber's gateway resolved
//                     (the neighbour check's bpf_fib_lookup answers at once). A test run repeats
//                     on the same packet, which the first run rewrote; later runs rewrite the
//                     fiber's address to itself, which takes exactly the same helpers (checksum
//                     updates, store, redirect), so repeat = 1e6 measures the steering path.
//                     Median of 7.
//   the same with the gateway unresolved: the second lookup (the kernel's route through that
//                     uplink) leads to the gateway, redirect without an explicit gateway; or it
//                     does not (no route): the packet is passed as it came.
//   the same rows with repeat = 1 per call on a fresh copy of the packet, mean of 10000 calls,
//                     median of 3: the per-call floor, comparable between the rows.
//   empty tc program: `return TC_ACT_UNSPEC`, the floor of the hook, both ways.
//
// The uplinks are veths in a network namespace of the bench's own (unshare), so bpf_fib_lookup()
// finds their routes and neighbour entries; the root namespace is not touched.
// Run as root: sudo ./wg_steer_bench. Pinned to one CPU; numbers vary with the CPU and kernel.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bench/bench_util.h"
#include "maps/uplinkd_maps.h"
#include "tests/bpf/packet_builder.h"

// The skeleton is named after its object, as is the map ABI's struct uplink_egress.
#define uplink_egress uplink_egress_skel
#include "uplink_egress.skel.h"
#undef uplink_egress

namespace {

using namespace uplinkd::bpftest;
using namespace uplinkd::bench;

constexpr uint16_t kFiber = 1, kBackup = 2, kUnresolved = 3, kUnrouted = 4;
constexpr uint32_t kPolicyFiber = 1, kPolicyBackup = 2, kPolicyUnresolved = 3, kPolicyUnrouted = 4;
constexpr uint16_t kWgPort = 51820;
constexpr const char* kPeer = "203.0.113.7";             // follows the fiber
constexpr const char* kPeerOnBackup = "203.0.113.9";     // follows the backup, where packets leave
constexpr const char* kPeerUnresolved = "203.0.113.10";  // its uplink's gateway is unresolved
constexpr const char* kPeerUnrouted = "203.0.113.11";    // ... and no route leads through it

// The uplinks' devices in the bench's own network namespace: the fiber's gateway resolved
// (permanent entry), ul1's not but the default route goes through it, ul2's not and no route.
void make_uplink_devices() {
  if (unshare(CLONE_NEWNET) != 0) {
    throw Failure{std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno) + " (run as root)"};
  }
  const char* script =
      "(ip link set lo up && sysctl -qw net.ipv4.conf.all.forwarding=1 &&"
      " for i in 0 1 2; do ip link add ul$i type veth peer name ul${i}p && ip link set ul${i}p up &&"
      " ip link set ul$i up && ip addr add 10.7$i.0.2/24 dev ul$i || exit 1; done &&"
      " ip neigh replace 10.70.0.1 lladdr 02:00:00:00:00:01 dev ul0 nud permanent &&"
      " ip route add default via 10.71.0.1 dev ul1) >/dev/null 2>&1";
  if (std::system(script) != 0) throw Failure{"setting up the bench's veths (ip, sysctl)"};
}

template <size_t N>
void put_v4(const char* text, uint8_t (&out)[N]) {
  if (inet_pton(AF_INET, text, out) != 1) {
    throw Failure{std::string("bad address ") + text};
  }
}

class Steering {
 public:
  Steering() {
    skel_ = uplink_egress__open();
    if (skel_ == nullptr) {
      throw Failure{std::string("opening uplink_egress: ") + std::strerror(errno)};
    }
    // Only the maps the program uses; the classifier's others come with its header.
    bpf_map* map = nullptr;
    bpf_object__for_each_map(map, skel_->obj) {
      const std::string name = bpf_map__name(map);
      if (!bpf_map__is_internal(map) && name != UPLINKD_MAP_POLICIES && name != UPLINKD_MAP_WG_ENDPOINTS &&
          name != UPLINKD_MAP_WG_COUNTERS && name != UPLINKD_MAP_UPLINK_EGRESS) {
        bpf_map__set_autocreate(map, false);
      }
    }
    if (uplink_egress__load(skel_) != 0) {
      uplink_egress__destroy(skel_);
      throw Failure{std::string("loading uplink_egress: ") + std::strerror(errno) + " (run as root)"};
    }
    // The fiber (ul0) is the active uplink (the test run never sends there); the backup is the
    // device the test run runs on (loopback, ifindex 1).
    const int egress_fd = bpf_map__fd(bpf_object__find_map_by_name(skel_->obj, UPLINKD_MAP_UPLINK_EGRESS));
    for (uint16_t id : {kFiber, kUnresolved, kUnrouted}) {
      const std::string n = std::to_string(id == kFiber ? 0 : id == kUnresolved ? 1 : 2);
      uplink_egress e{};
      e.ifindex = if_nametoindex(("ul" + n).c_str());
      e.flags = UPLINK_EGRESS_HAS_V4 | UPLINK_EGRESS_HAS_GW4;
      put_v4(("10.7" + n + ".0.2").c_str(), e.src4);
      put_v4(("10.7" + n + ".0.1").c_str(), e.gw4);
      uint32_t key = id;
      check(bpf_map_update_elem(egress_fd, &key, &e, BPF_ANY), "uplink_egress");
    }
    uplink_egress backup{};
    backup.ifindex = 1;
    backup.flags = UPLINK_EGRESS_HAS_V4;
    put_v4("198.51.100.2", backup.src4);
    uint32_t id = kBackup;
    check(bpf_map_update_elem(egress_fd, &id, &backup, BPF_ANY), "uplink_egress");
    put_policy(kPolicyFiber, kFiber);
    put_policy(kPolicyBackup, kBackup);
    put_endpoint(kPeer, kPolicyFiber, 1);
    put_endpoint(kPeerOnBackup, kPolicyBackup, 2);
    put_policy(kPolicyUnresolved, kUnresolved);
    put_policy(kPolicyUnrouted, kUnrouted);
    put_endpoint(kPeerUnresolved, kPolicyUnresolved, 3);
    put_endpoint(kPeerUnrouted, kPolicyUnrouted, 4);
  }
  ~Steering() { uplink_egress__destroy(skel_); }
  Steering(const Steering&) = delete;
  Steering& operator=(const Steering&) = delete;

  // Kernel-reported ns per run; *verdict gets the last run's.
  int fd() const { return bpf_program__fd(skel_->progs.wg_steer); }

  uint32_t run(const Bytes& frame, uint32_t repeat, uint32_t* verdict = nullptr) const {
    return run_program(bpf_program__fd(skel_->progs.wg_steer), frame, repeat, verdict);
  }

  static uint32_t run_program(int fd, const Bytes& frame, uint32_t repeat, uint32_t* verdict = nullptr) {
    const TcRunResult r = tc_test_run(fd, frame, repeat, __sk_buff{}, 64);
    if (verdict != nullptr) {
      *verdict = r.verdict;
    }
    return r.ns_per_run;
  }

 private:
  void put_policy(uint32_t policy, uint16_t uplink) {
    policy_entry p{};
    p.n_members = 1;
    p.threshold[0] = 0xffffffffu;
    p.mark[0] = static_cast<uint32_t>(uplink) << 8;
    p.uplink_id[0] = uplink;
    const int fd = bpf_map__fd(skel_->maps.policies);
    for (uint8_t family : {4, 6}) {
      uint32_t slot = UPLINKD_POLICY_SLOT(policy, family);
      check(bpf_map_update_elem(fd, &slot, &p, BPF_ANY), "policies");
    }
  }

  void put_endpoint(const char* addr, uint32_t policy, uint32_t id) {
    wg_endpoint_key key{};
    put_v4(addr, key.addr);
    key.port = htons(kWgPort);
    key.family = 4;
    const wg_endpoint_value value{policy, id};
    check(bpf_map_update_elem(bpf_map__fd(skel_->maps.wg_endpoints), &key, &value, BPF_ANY), "wg_endpoints");
  }

  uplink_egress_skel* skel_ = nullptr;
};

// A WireGuard-sized data packet (148 bytes of UDP payload: a handshake initiation).
Bytes wg_packet(const char* dst) {
  return ethernet(ETH_P_IP, ipv4("198.51.100.2", dst, IPPROTO_UDP, udp(kWgPort, kWgPort, Bytes(148, 0x5a))));
}

// One row: the program (the steering one or the empty one) on a frame, with the verdict it must give.
struct Case {
  int fd;
  const Bytes* frame;
  uint32_t verdict;
};

double repeated(const Case& c) {
  uint32_t verdict = 0;
  Steering::run_program(c.fd, *c.frame, 1, &verdict);
  if (verdict != c.verdict) {
    throw Failure{"unexpected verdict " + std::to_string(verdict)};
  }
  return median_of_rounds(7, [&] { return Steering::run_program(c.fd, *c.frame, 1'000'000); });
}

double single_runs(const Case& c) {
  return mean_of_single_runs(3, 10000, [&](int) {
    uint32_t verdict = 0;
    const uint32_t ns = Steering::run_program(c.fd, *c.frame, 1, &verdict);
    if (verdict != c.verdict) {
      throw Failure{"unexpected verdict " + std::to_string(verdict)};
    }
    return ns;
  });
}

}  // namespace

int main() {
  quiet_libbpf_and_pin_to_cpu0();
  int empty = -1;
  try {
    make_uplink_devices();
    Steering s;
    empty = load_empty_tc();
    const int fd = s.fd();
    const Bytes tcp_packet =
        ethernet(ETH_P_IP, ipv4("198.51.100.2", "203.0.113.99", IPPROTO_TCP, tcp(40000, 443, 1, 1, kTcpAck)));
    const Bytes other = wg_packet("203.0.113.99");
    const Bytes on_active = wg_packet(kPeerOnBackup);
    const Bytes steered = wg_packet(kPeer);
    const Bytes unresolved = wg_packet(kPeerUnresolved);
    const Bytes unrouted = wg_packet(kPeerUnrouted);
    struct Row {
      const char* what;
      Case c;
      bool single;  // also measured one fresh packet per call
    };
    const Row rows[] = {
        {"empty tc program", {empty, &steered, static_cast<uint32_t>(TC_ACT_UNSPEC)}, true},
        {"TCP, pass-through", {fd, &tcp_packet, TC_ACT_OK}, false},
        {"UDP, not an endpoint", {fd, &other, TC_ACT_OK}, true},
        {"endpoint already on its active uplink", {fd, &on_active, TC_ACT_OK}, true},
        {"endpoint on the wrong uplink, gateway resolved: rewrite + redirect",
         {fd, &steered, TC_ACT_REDIRECT},
         true},
        {"... gateway unresolved, the kernel's route leads to it: rewrite + redirect without it",
         {fd, &unresolved, TC_ACT_REDIRECT},
         true},
        {"... gateway unresolved, no route through it: passed as it came", {fd, &unrouted, TC_ACT_OK}, true},
    };
    std::printf(
        "| case | repeat 1,000,000, median of 7 | above empty | repeat 1, fresh packet per call | above "
        "empty |\n");
    std::printf("|---|---|---|---|---|\n");
    double empty_rep = 0, empty_one = 0;
    for (const Row& r : rows) {
      const double rep = repeated(r.c);
      const double one = r.single ? single_runs(r.c) : 0;
      if (r.c.fd == empty) {
        empty_rep = rep;
        empty_one = one;
        std::printf("| %s | %.0f | | %.0f | |\n", r.what, rep, one);
      } else if (r.single) {
        std::printf("| %s | %.0f | %.0f | %.0f | %.0f |\n", r.what, rep, rep - empty_rep, one,
                    one - empty_one);
      } else {
        std::printf("| %s | %.0f | %.0f | | |\n", r.what, rep, rep - empty_rep);
      }
    }
    std::printf(
        "(repeat: BPF_PROG_TEST_RUN repeat=1000000, kernel-reported mean, median of 7; later runs of the "
        "steered rows rewrite the same packet again. Fresh: repeat=1 per call, 10000 calls, mean of "
        "kernel-reported durations, median of 3)\n");
  } catch (const Failure& f) {
    std::fprintf(stderr, "wg_steer_bench: %s\n", f.what.c_str());
    if (empty >= 0) close(empty);
    return 1;
  }
  close(empty);
  return 0;
}
