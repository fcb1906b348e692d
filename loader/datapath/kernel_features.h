// What the running kernel lets BPF programs do, asked once and remembered: a program that calls a
// helper the kernel refuses is refused whole, so such calls are switched off before loading (a
// read-only variable the verifier sees as a constant, so the call is never even checked).
#pragma once

#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <unistd.h>

namespace uplinkd::datapath {

// Whether XDP programs may reserve metadata (bpf_xdp_adjust_meta). Every mainline kernel since 4.15
// allows it, but some kernels are built to refuse it (seen on a 6.18 kernel): there uplink_ingress
// loads without tagging matched probe replies, so health checking is unchanged and only
// probe_reply_mark is not set (see README, "Not supported yet").
// Loads a four-instruction XDP program that reserves 8 bytes of metadata and passes the packet: its
// fd, or -1 where the kernel refuses bpf_xdp_adjust_meta. The tests run it too (metadata in test runs).
inline int load_xdp_meta_probe() {
  const bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_2, 0, 0, -8},        // r2 = -8 (r1 is the context)
      {BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_xdp_adjust_meta},   // bpf_xdp_adjust_meta(ctx, -8)
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, XDP_PASS},  // return XDP_PASS
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  return bpf_prog_load(BPF_PROG_TYPE_XDP, "uplinkd_meta", "GPL", insns, 4, nullptr);
}

// Asked by loading that program: libbpf's libbpf_probe_bpf_helper() says yes on such kernels, as it
// only looks for "unknown func" in the log.
inline bool xdp_metadata_supported() {
  static const bool supported = [] {
    const int fd = load_xdp_meta_probe();
    if (fd < 0) return false;
    close(fd);
    return true;
  }();
  return supported;
}

}  // namespace uplinkd::datapath
