// Per-packet cost of the LAN classifier (lan_ingress), measured by the kernel's own timer in
// BPF_PROG_TEST_RUN (opts.duration: nanoseconds per run, averaged over `repeat` runs).
//
//   established flow: one packet of a known flow, repeat = 1e6 on the same skb (every run is a
//                     `flows` hit: lookup, stale check, mark). Median of 5 rounds.
//   new flow, N rules: a test run repeats on the very same packet and the first run files the flow,
//                     so repeat > 1 would measure hits. Instead repeat = 1 per call, each call a new
//                     5-tuple (distinct source port), averaging the kernel-reported durations over
//                     10000 calls; median of 3 rounds. Rules 0 .. N-2 are full (8 source CIDRs,
//                     8 destination CIDRs, 8 source and 8 destination port ranges) and fail only at
//                     their destination list, the most expensive place to fail; rule N-1 matches.
//                     The cost includes the `flows` insert and the policy pick.
//
// Run as root: sudo ./classifier_bench. Pinned to one CPU; numbers vary with the CPU and kernel.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lan_ingress.skel.h"
#include "maps/uplinkd_maps.h"
#include "tests/bpf/packet_builder.h"

namespace {

using namespace uplinkd::bpftest;

constexpr uint16_t kWan = 1, kLte = 3;
constexpr uint32_t kPolicyWan = 0, kPolicyLte = 1;
constexpr uint32_t kMmxMask = 0x3f00;

struct Failure {
  std::string what;
};

void check(int err, const std::string& what) {
  if (err != 0) {
    throw Failure{what + ": " + std::strerror(errno != 0 ? errno : -err)};
  }
}

addr_match v4_cidr(const char* addr, uint8_t prefixlen) {
  addr_match m{};
  if (inet_pton(AF_INET, addr, m.addr) != 1) {
    throw Failure{std::string("bad address ") + addr};
  }
  m.prefixlen = prefixlen;
  m.family = 4;
  return m;
}

rule_entry full_rule(bool matches) {
  rule_entry r{};
  r.family = 4;
  r.proto = IPPROTO_TCP;
  r.policy_id = matches ? kPolicyLte : kPolicyWan;
  r.sticky_timeout_s = 600;
  r.n_src = r.n_dst = r.n_sport = r.n_dport = 8;
  for (int i = 0; i < 8; i++) {
    const std::string src = "10." + std::to_string(i) + ".0.0";
    r.src[i] = v4_cidr(src.c_str(), i == 0 ? 8 : 16);
    const std::string dst = "192.0.2." + std::to_string(16 * i);
    r.dst[i] = v4_cidr(dst.c_str(), 28);
    r.sport[i] = port_range{static_cast<uint16_t>(i + 1), static_cast<uint16_t>(i + 1)};
    r.dport[i] = port_range{static_cast<uint16_t>(i + 1), static_cast<uint16_t>(i + 1)};
  }
  r.sport[7] = port_range{1024, 65535};
  r.dport[7] = port_range{443, 443};
  if (matches) {
    r.n_dst = 1;
    r.dst[0] = v4_cidr("203.0.113.0", 24);
  }
  return r;
}

policy_entry one_member(uint16_t uplink) {
  policy_entry p{};
  p.n_members = 1;
  p.threshold[0] = 0xffffffffu;
  p.mark[0] = static_cast<uint32_t>(uplink) << 8;
  p.uplink_id[0] = uplink;
  return p;
}

class Classifier {
 public:
  explicit Classifier(uint32_t n_rules) {
    skel_ = lan_ingress__open_and_load();
    if (skel_ == nullptr) {
      throw Failure{std::string("loading lan_ingress: ") + std::strerror(errno) + " (run as root)"};
    }
    for (uint16_t id : {kWan, kLte}) {
      uint32_t key = id;
      uplink_record u{};
      u.state = UPLINK_STATE_ONLINE;
      u.generation = 1;
      u.mark = static_cast<uint32_t>(id) << 8;
      check(bpf_map_update_elem(bpf_map__fd(skel_->maps.uplinks), &key, &u, BPF_ANY), "uplinks");
    }
    for (auto [id, uplink] : {std::pair{kPolicyWan, kWan}, std::pair{kPolicyLte, kLte}}) {
      const policy_entry p = one_member(uplink);
      for (uint8_t family : {4, 6}) {
        uint32_t slot = UPLINKD_POLICY_SLOT(id, family);
        check(bpf_map_update_elem(bpf_map__fd(skel_->maps.policies), &slot, &p, BPF_ANY), "policies");
      }
    }
    for (uint32_t i = 0; i < n_rules; i++) {
      const rule_entry r = full_rule(i + 1 == n_rules);
      check(bpf_map_update_elem(bpf_map__fd(skel_->maps.rules), &i, &r, BPF_ANY), "rules");
    }
    const classifier_cfg cfg{kMmxMask, n_rules, kMmxMask, 600};
    uint32_t zero = 0;
    check(bpf_map_update_elem(bpf_map__fd(skel_->maps.classifier_cfg), &zero, &cfg, BPF_ANY),
          "classifier_cfg");
  }
  ~Classifier() { lan_ingress__destroy(skel_); }
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  // Kernel-reported ns per run; *mark gets the mark the last run left.
  uint32_t run(const Bytes& frame, uint32_t repeat, uint32_t* mark = nullptr) {
    __sk_buff ctx_in{}, ctx_out{};
    ctx_in.ingress_ifindex = 11;
    bpf_test_run_opts opts{};
    opts.sz = sizeof opts;
    opts.data_in = frame.data();
    opts.data_size_in = static_cast<uint32_t>(frame.size());
    opts.ctx_in = &ctx_in;
    opts.ctx_size_in = sizeof ctx_in;
    opts.ctx_out = &ctx_out;
    opts.ctx_size_out = sizeof ctx_out;
    opts.repeat = repeat;
    check(bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.lan_ingress), &opts), "BPF_PROG_TEST_RUN");
    if (mark != nullptr) {
      *mark = ctx_out.mark;
    }
    return opts.duration;
  }

 private:
  lan_ingress* skel_ = nullptr;
};

Bytes syn_from_port(uint16_t sport) {
  return ethernet(ETH_P_IP, ipv4("10.0.0.10", "203.0.113.80", IPPROTO_TCP, tcp(sport, 443, 1, 0, kTcpSyn)));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double established_flow() {
  Classifier c(8);
  const Bytes frame = syn_from_port(40000);
  uint32_t mark = 0;
  c.run(frame, 1, &mark);  // files the flow
  if (mark != (static_cast<uint32_t>(kLte) << 8)) {
    throw Failure{"established flow: unexpected mark " + std::to_string(mark)};
  }
  std::vector<double> rounds;
  rounds.reserve(5);
  for (int i = 0; i < 5; i++) {
    rounds.push_back(c.run(frame, 1'000'000));
  }
  return median(rounds);
}

// The floor of the repeat=1 method: the same known-flow packet, one run per call.
double established_flow_single_runs() {
  constexpr int kCalls = 10000;
  Classifier c(8);
  const Bytes frame = syn_from_port(40000);
  c.run(frame, 1);
  std::vector<double> rounds;
  for (int round = 0; round < 3; round++) {
    uint64_t total_ns = 0;
    for (int i = 0; i < kCalls; i++) {
      total_ns += c.run(frame, 1);
    }
    rounds.push_back(static_cast<double>(total_ns) / kCalls);
  }
  return median(rounds);
}

double new_flows(uint32_t n_rules) {
  constexpr int kCalls = 10000, kRounds = 3;
  Classifier c(n_rules);
  std::vector<double> rounds;
  uint16_t sport = 1024;
  for (int round = 0; round < kRounds; round++) {
    uint64_t total_ns = 0;
    for (int i = 0; i < kCalls; i++) {
      uint32_t mark = 0;
      total_ns += c.run(syn_from_port(sport++), 1, &mark);
      if (mark != (n_rules == 0 ? 0 : static_cast<uint32_t>(kLte) << 8)) {
        throw Failure{"new flow: the last rule did not decide (mark " + std::to_string(mark) + ")"};
      }
    }
    rounds.push_back(static_cast<double>(total_ns) / kCalls);
  }
  return median(rounds);
}

}  // namespace

int main() {
  libbpf_set_print([](enum libbpf_print_level level, const char* fmt, va_list args) {
    return level == LIBBPF_WARN ? std::vfprintf(stderr, fmt, args) : 0;
  });
  cpu_set_t one{};
  CPU_ZERO(&one);
  CPU_SET(0, &one);
  sched_setaffinity(0, sizeof one, &one);
  try {
    std::printf(
        "established flow (flows hit): %.1f ns/packet (BPF_PROG_TEST_RUN repeat=1000000 on one packet, "
        "kernel-reported mean, median of 5)\n",
        established_flow());
    std::printf(
        "established flow, one run per call: %.1f ns/packet (repeat=1 per call, 10000 calls, mean of "
        "kernel-reported durations, median of 3: the floor of the new-flow method)\n",
        established_flow_single_runs());
    std::printf(
        "new flow, no rules (unmatched): %.1f ns/packet (repeat=1 per call, 10000 calls with distinct "
        "source ports, mean of kernel-reported durations, median of 3)\n",
        new_flows(0));
    for (uint32_t n : {8u, 64u, 256u}) {
      std::printf(
          "new flow, %u rules, last matches: %.1f ns/packet (repeat=1 per call, 10000 calls with distinct "
          "source ports, mean of kernel-reported durations, median of 3)\n",
          n, new_flows(n));
    }
  } catch (const Failure& f) {
    std::fprintf(stderr, "classifier_bench: %s\n", f.what.c_str());
    return 1;
  }
  return 0;
}
