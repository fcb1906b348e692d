// What the BPF_PROG_TEST_RUN benches share: one timed test run of a tc program, the two ways they
// average its kernel-reported duration, and how they fail and settle on one CPU. Kept in one place
// so that every bench's numbers mean the same thing.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tests/bpf/packet_builder.h"

namespace uplinkd::bench {

// Thrown on any set-up or verdict failure; main() prints it and exits 1.
struct Failure {
  std::string what;
};

inline void check(int err, const std::string& what) {
  if (err != 0) {
    throw Failure{what + ": " + std::strerror(errno != 0 ? errno : -err)};
  }
}

// `r0 = TC_ACT_UNSPEC; exit`, loaded as a tc classifier: the floor of the hook, the "empty program"
// every tc bench states its figures above.
inline int load_empty_tc() {
  const bpf_insn insns[] = {
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = TC_ACT_UNSPEC},
      {.code = BPF_JMP | BPF_EXIT},
  };
  const int fd = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "empty_tc", "GPL", insns, 2, nullptr);
  if (fd < 0)
    throw Failure{std::string("loading the empty tc program: ") + std::strerror(errno) + " (run as root)"};
  return fd;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// What one BPF_PROG_TEST_RUN left behind.
struct TcRunResult {
  uint32_t ns_per_run = 0;  // opts.duration: the kernel's mean over `repeat` runs
  uint32_t verdict = 0;     // the last run's return value
  uint32_t mark = 0;        // skb->mark after the last run
};

// Runs the tc program `prog_fd` on `frame` `repeat` times. `out_room` > 0 also asks for the packet
// back (room for what the program may add); 0 leaves data_out unset, as the classifier benches do.
inline TcRunResult tc_test_run(int prog_fd, const bpftest::Bytes& frame, uint32_t repeat, __sk_buff ctx_in,
                               size_t out_room = 0) {
  bpftest::Bytes out(out_room == 0 ? 0 : frame.size() + out_room);
  __sk_buff ctx_out{};
  bpf_test_run_opts opts{};
  opts.sz = sizeof opts;
  opts.data_in = frame.data();
  opts.data_size_in = static_cast<uint32_t>(frame.size());
  if (!out.empty()) {
    opts.data_out = out.data();
    opts.data_size_out = static_cast<uint32_t>(out.size());
  }
  opts.ctx_in = &ctx_in;
  opts.ctx_size_in = sizeof ctx_in;
  opts.ctx_out = &ctx_out;
  opts.ctx_size_out = sizeof ctx_out;
  opts.repeat = repeat;
  check(bpf_prog_test_run_opts(prog_fd, &opts), "BPF_PROG_TEST_RUN");
  return TcRunResult{opts.duration, opts.retval, ctx_out.mark};
}

// The repeat method: median over `rounds` of `timed_round()` (each one test run with a large
// repeat, returning the kernel's ns per run).
template <typename TimedRound>
double median_of_rounds(int rounds, TimedRound timed_round) {
  std::vector<double> results;
  results.reserve(static_cast<size_t>(rounds));
  for (int i = 0; i < rounds; i++) {
    results.push_back(timed_round());
  }
  return median(results);
}

// The one-run-per-call method, for packets a repeat would not show fresh: `one_call(i)` makes one
// test run with repeat 1 and returns its kernel-reported ns; the mean over `calls` calls, median
// of `rounds` rounds. `i` counts calls across rounds, so callers can derive a distinct packet.
template <typename OneCall>
double mean_of_single_runs(int rounds, int calls, OneCall one_call) {
  int call = 0;
  return median_of_rounds(rounds, [&] {
    uint64_t total_ns = 0;
    for (int i = 0; i < calls; i++) {
      total_ns += one_call(call++);
    }
    return static_cast<double>(total_ns) / calls;
  });
}

// libbpf warnings only, and this process on CPU 0, so that runs compare with each other.
inline void quiet_libbpf_and_pin_to_cpu0() {
  libbpf_set_print([](enum libbpf_print_level level, const char* fmt, va_list args) {
    return level == LIBBPF_WARN ? std::vfprintf(stderr, fmt, args) : 0;
  });
  cpu_set_t one{};
  CPU_ZERO(&one);
  CPU_SET(0, &one);
  sched_setaffinity(0, sizeof one, &one);
}

}  // namespace uplinkd::bench
