// Per-packet cost of WireGuard endpoint steering (uplink_egress, tc egress on uplinks), measured by
// the kernel's own timer in BPF_PROG_TEST_RUN (opts.duration: nanoseconds per run, averaged over
// `repeat` runs).
//
//   pass-through, TCP: the common case on an uplink (parse, not UDP). repeat = 1e6, median of 7.
//   pass-through, not an endpoint: UDP to another address (parse + one hash miss). repeat = 1e6,
//                     median of 7.
//   pass-through, endpoint already on the active uplink: parse, endpoint hit, policy, uplink_egress,
//                     ifindex match, counter. repeat = 1e6, median of 7.
//   rewrite + redirect: an endpoint packet leaving by the backup. A test run repeats on the same
//                     packet, which the first run rewrote; later runs rewrite the fiber's address to
//                     itself, which takes exactly the same helpers (checksum updates, store,
//                     redirect), so repeat = 1e6 measures the steering path. Median of 7.
//   the same three with repeat = 1 per call on a fresh copy of the packet, mean of 10000 calls,
//                     median of 3: the per-call floor, comparable between the rows.
//
// Run as root: sudo ./wg_steer_bench. Pinned to one CPU; numbers vary with the CPU and kernel.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
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

constexpr uint16_t kFiber = 1, kBackup = 2;
constexpr uint32_t kPolicyFiber = 1, kPolicyBackup = 2;
constexpr uint16_t kWgPort = 51820;
constexpr const char* kPeer = "203.0.113.7";          // follows the fiber
constexpr const char* kPeerOnBackup = "203.0.113.9";  // follows the backup, where packets leave

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
    // The fiber is the active uplink (a device the test run never sends to); the backup is the
    // device the test run runs on (loopback, ifindex 1).
    uplink_egress fiber{};
    fiber.ifindex = 4242;
    fiber.flags = UPLINK_EGRESS_HAS_V4 | UPLINK_EGRESS_HAS_GW4;
    put_v4("192.0.2.2", fiber.src4);
    put_v4("192.0.2.1", fiber.gw4);
    uplink_egress backup{};
    backup.ifindex = 1;
    backup.flags = UPLINK_EGRESS_HAS_V4;
    put_v4("198.51.100.2", backup.src4);
    const int egress_fd = bpf_map__fd(bpf_object__find_map_by_name(skel_->obj, UPLINKD_MAP_UPLINK_EGRESS));
    uint32_t id = kFiber;
    check(bpf_map_update_elem(egress_fd, &id, &fiber, BPF_ANY), "uplink_egress");
    id = kBackup;
    check(bpf_map_update_elem(egress_fd, &id, &backup, BPF_ANY), "uplink_egress");
    put_policy(kPolicyFiber, kFiber);
    put_policy(kPolicyBackup, kBackup);
    put_endpoint(kPeer, kPolicyFiber, 1);
    put_endpoint(kPeerOnBackup, kPolicyBackup, 2);
  }
  ~Steering() { uplink_egress__destroy(skel_); }
  Steering(const Steering&) = delete;
  Steering& operator=(const Steering&) = delete;

  // Kernel-reported ns per run; *verdict gets the last run's.
  uint32_t run(const Bytes& frame, uint32_t repeat, uint32_t* verdict = nullptr) {
    const TcRunResult r = tc_test_run(bpf_program__fd(skel_->progs.wg_steer), frame, repeat, __sk_buff{}, 64);
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

double repeated(Steering& s, const Bytes& frame, uint32_t expected_verdict) {
  uint32_t verdict = 0;
  s.run(frame, 1, &verdict);
  if (verdict != expected_verdict) {
    throw Failure{"unexpected verdict " + std::to_string(verdict)};
  }
  return median_of_rounds(7, [&] { return s.run(frame, 1'000'000); });
}

double single_runs(Steering& s, const Bytes& frame, uint32_t expected_verdict) {
  return mean_of_single_runs(3, 10000, [&](int) {
    uint32_t verdict = 0;
    const uint32_t ns = s.run(frame, 1, &verdict);
    if (verdict != expected_verdict) {
      throw Failure{"unexpected verdict " + std::to_string(verdict)};
    }
    return ns;
  });
}

}  // namespace

int main() {
  quiet_libbpf_and_pin_to_cpu0();
  try {
    Steering s;
    const Bytes tcp_packet =
        ethernet(ETH_P_IP, ipv4("198.51.100.2", "203.0.113.99", IPPROTO_TCP, tcp(40000, 443, 1, 1, kTcpAck)));
    const Bytes other = wg_packet("203.0.113.99");
    const Bytes on_active = wg_packet(kPeerOnBackup);
    const Bytes steered = wg_packet(kPeer);
    const char* repeat_method = "BPF_PROG_TEST_RUN repeat=1000000, kernel-reported mean, median of 7";
    const char* single_method =
        "repeat=1 per call, 10000 calls, mean of kernel-reported durations, median of 3";
    std::printf("pass-through, TCP: %.1f ns/packet (%s)\n", repeated(s, tcp_packet, TC_ACT_OK),
                repeat_method);
    std::printf("pass-through, UDP not to an endpoint: %.1f ns/packet (%s)\n", repeated(s, other, TC_ACT_OK),
                repeat_method);
    std::printf("pass-through, endpoint already on the active uplink: %.1f ns/packet (%s)\n",
                repeated(s, on_active, TC_ACT_OK), repeat_method);
    std::printf("rewrite + redirect: %.1f ns/packet (%s; later runs rewrite the same packet again)\n",
                repeated(s, steered, TC_ACT_REDIRECT), repeat_method);
    std::printf("pass-through, UDP not to an endpoint: %.1f ns/packet (%s)\n",
                single_runs(s, other, TC_ACT_OK), single_method);
    std::printf("pass-through, endpoint already on the active uplink: %.1f ns/packet (%s)\n",
                single_runs(s, on_active, TC_ACT_OK), single_method);
    std::printf("rewrite + redirect, fresh packet each call: %.1f ns/packet (%s)\n",
                single_runs(s, steered, TC_ACT_REDIRECT), single_method);
  } catch (const Failure& f) {
    std::fprintf(stderr, "wg_steer_bench: %s\n", f.what.c_str());
    return 1;
  }
  return 0;
}
