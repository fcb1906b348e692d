// One BPF_PROG_TEST_RUN of a program on one packet, with a context in and out (struct xdp_md for
// XDP, struct __sk_buff for tc). Every fixture runs programs this way, so the option set-up lives here.
#pragma once

#include <bpf/bpf.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "packet_builder.h"

namespace uplinkd::bpftest {

struct TestRun {
  int err = 0;          // what bpf_prog_test_run_opts returned (0, or a negative errno)
  int saved_errno = 0;  // errno right after the call
  uint32_t retval = 0;  // the program's verdict
  Bytes data_out;       // what the kernel wrote out (XDP: from data_meta on)
};

// Runs `prog_fd` once (repeat 1: BPF_PROG_TEST_RUN with repeat > 1 keeps modifying the same
// packet). `room` is the extra output space for headers or metadata the program may add.
template <typename Ctx>
TestRun test_run_once(int prog_fd, const Bytes& packet, Ctx ctx_in, Ctx* ctx_out, size_t room = 256) {
  TestRun r;
  r.data_out.resize(packet.size() + room);
  *ctx_out = Ctx{};
  bpf_test_run_opts opts{};
  opts.sz = sizeof opts;
  opts.data_in = packet.data();
  opts.data_size_in = static_cast<uint32_t>(packet.size());
  opts.data_out = r.data_out.data();
  opts.data_size_out = static_cast<uint32_t>(r.data_out.size());
  opts.ctx_in = &ctx_in;
  opts.ctx_size_in = sizeof ctx_in;
  opts.ctx_out = ctx_out;
  opts.ctx_size_out = sizeof *ctx_out;
  opts.repeat = 1;
  r.err = bpf_prog_test_run_opts(prog_fd, &opts);
  r.saved_errno = errno;
  r.retval = opts.retval;
  r.data_out.resize(std::min<size_t>(opts.data_size_out, r.data_out.size()));
  return r;
}

}  // namespace uplinkd::bpftest
