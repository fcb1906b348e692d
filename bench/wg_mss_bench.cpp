// Per-packet cost of MSS clamping (wg_mss, tc ingress and egress of WireGuard devices), beside an
// empty tc program in the same run, measured by the kernel's own timer in BPF_PROG_TEST_RUN
// (opts.duration), on the l3_only instance with packets as WireGuard carries them (no Ethernet).
//
//   empty tc program: `return TC_ACT_UNSPEC`, the floor of the hook.
//   device without a clamp: one hash miss (every packet of a tunnel without clamp_mss).
//   data segment on a clamped device: the lookup, the IPv4 and TCP parse, not a SYN.
//   SYN already small enough: parse and the option walk, nothing written.
//   SYN clamped: the walk, the store and the checksum update. A repeat would see its own rewrite
//     (already small enough) from the second run, so this row is measured one packet per call,
//     and so is the empty program beside it.
// repeat rows: repeat = 1,000,000, median of 7. per-call rows: 10,000 calls of repeat 1, mean of
// the kernel-reported durations, median of 3.
//
// Run as root: sudo build/wg_mss_bench. Pinned to one CPU; quote it as cost above the empty row.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "bench/bench_util.h"
#include "maps/uplinkd_maps.h"
#include "tests/bpf/packet_builder.h"
#include "wg_mss.skel.h"

namespace {

using namespace uplinkd::bpftest;
using namespace uplinkd::bench;

constexpr uint32_t kLoopbackIfindex = 1;  // a test run with ctx ifindex 0 runs on loopback

Bytes syn(uint16_t mss, uint8_t flags = kTcpSyn) {
  const Bytes options =
      concat(concat(tcp_mss_option(mss), Bytes{4, 2}), concat(tcp_timestamps(1000, 0), Bytes{1, 3, 3, 7}));
  return ipv4("10.99.0.2", "10.99.0.1", IPPROTO_TCP,
              tcp_segment(40000, 443, 1000, 0, flags, TcpSegment{.options = options}));
}

double repeated(int fd, const Bytes& packet) {
  return median_of_rounds(7, [&] { return tc_test_run(fd, packet, 1'000'000, __sk_buff{}).ns_per_run; });
}

double per_call(int fd, const Bytes& packet) {
  return mean_of_single_runs(3, 10000,
                             [&](int) { return tc_test_run(fd, packet, 1, __sk_buff{}).ns_per_run; });
}

}  // namespace

int main() {
  quiet_libbpf_and_pin_to_cpu0();
  wg_mss* skel = nullptr;
  int empty = -1;
  try {
    empty = load_empty_tc();
    skel = wg_mss__open();
    if (skel == nullptr) throw Failure{"opening wg_mss"};
    skel->rodata->l3_only = 1;
    if (wg_mss__load(skel) != 0) throw Failure{"loading wg_mss (run as root)"};
    const int prog = bpf_program__fd(skel->progs.wg_mss);
    const int clamp_fd = bpf_map__fd(skel->maps.mss_clamp);
    const uint32_t key = kLoopbackIfindex;
    const mss_clamp_value clamp{1288, 1268, 0};

    const Bytes data = ipv4("10.99.0.2", "10.99.0.1", IPPROTO_TCP, tcp(40000, 443, 1000, 1, kTcpAck));
    const Bytes small_syn = syn(1200);
    const Bytes big_syn = syn(1380);
    const char* rep = "repeat 1,000,000, median of 7";
    const char* one = "one packet per call, 10,000 calls, median of 3";

    const double empty_rep = repeated(empty, data);
    bpf_map_delete_elem(clamp_fd, &key);
    const double no_entry = repeated(prog, data);
    check(bpf_map_update_elem(clamp_fd, &key, &clamp, BPF_ANY), "mss_clamp");
    const double data_rep = repeated(prog, data);
    const double small_rep = repeated(prog, small_syn);
    const double empty_one = per_call(empty, big_syn);
    const double clamped_one = per_call(prog, big_syn);
    const double small_one = per_call(prog, small_syn);
    std::printf("| case | method | ns/packet | above empty |\n|---|---|---|---|\n");
    std::printf("| empty tc program | %s | %.1f | |\n", rep, empty_rep);
    std::printf("| device without a clamp | %s | %.1f | %.1f |\n", rep, no_entry, no_entry - empty_rep);
    std::printf("| data segment, clamped device | %s | %.1f | %.1f |\n", rep, data_rep, data_rep - empty_rep);
    std::printf("| SYN already small enough | %s | %.1f | %.1f |\n", rep, small_rep, small_rep - empty_rep);
    std::printf("| empty tc program | %s | %.1f | |\n", one, empty_one);
    std::printf("| SYN already small enough | %s | %.1f | %.1f |\n", one, small_one, small_one - empty_one);
    std::printf("| SYN clamped (1380 to 1288) | %s | %.1f | %.1f |\n", one, clamped_one,
                clamped_one - empty_one);
  } catch (const Failure& f) {
    std::fprintf(stderr, "wg_mss_bench: %s\n", f.what.c_str());
    if (skel != nullptr) wg_mss__destroy(skel);
    if (empty >= 0) close(empty);
    return 1;
  }
  wg_mss__destroy(skel);
  close(empty);
  return 0;
}
