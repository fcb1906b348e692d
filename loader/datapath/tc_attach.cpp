#include "datapath/tc_attach.h"

#include <net/if.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace uplinkd::datapath::tc {

std::string errno_text(int err) {
  err = err < 0 ? -err : err;
  return std::string(strerror(err)) + " (errno " + std::to_string(err) + ")";
}

const char* direction(bpf_tc_attach_point point) { return point == BPF_TC_INGRESS ? "ingress" : "egress"; }

std::string attach_hint(int err, bpf_tc_attach_point point) {
  switch (err < 0 ? -err : err) {
    case ENODEV:
      return "the device is gone; it is attached again when it reappears";
    case EPERM:
    case EACCES:
      return "uplinkd needs CAP_NET_ADMIN and CAP_BPF (run it as root)";
    case EOPNOTSUPP:
    case EINVAL:
    case ENOENT:
      return "the kernel needs the clsact qdisc (CONFIG_NET_SCH_INGRESS) and the BPF classifier "
             "(CONFIG_NET_CLS_BPF)";
    default:
      return std::string("see `tc filter show dev <device> ") + direction(point) +
             "` for what holds the hook";
  }
}

bool device_exists(int ifindex) {
  std::array<char, IF_NAMESIZE> name{};
  return if_indextoname(static_cast<unsigned>(ifindex), name.data()) != nullptr;
}

AttachResult attach(int ifindex, const Filter& filter, int prog_fd, bool qdisc_known) {
  AttachResult r;
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = filter.point);
  const int herr = qdisc_known ? -EEXIST : bpf_tc_hook_create(&hook);
  if (herr != 0 && herr != -EEXIST) {
    r.err = herr;
    r.qdisc_failed = true;
    return r;
  }
  r.qdisc_created = herr == 0;
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE, .handle = filter.handle,
              .priority = filter.priority);
  const int terr = bpf_tc_attach(&hook, &opts);
  if (terr != 0) {
    if (r.qdisc_created) destroy_qdisc(ifindex);
    r.err = terr;
    r.qdisc_created = false;
  }
  return r;
}

void detach(int ifindex, const Filter& filter) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = filter.point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = filter.handle, .priority = filter.priority);
  bpf_tc_detach(&hook, &opts);
}

// libbpf prints the kernel's "Cannot find specified filter chain" for a query that finds nothing,
// which is an answer here, not a warning: its printer is off for the call.
bool present(int ifindex, const Filter& filter) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = filter.point);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = filter.handle, .priority = filter.priority);
  const libbpf_print_fn_t printer = libbpf_set_print(nullptr);
  const bool found = bpf_tc_query(&hook, &opts) == 0;
  libbpf_set_print(printer);
  return found;
}

bool uplinkd_filters_present(int ifindex) {
  for (const Filter& f :
       {kDatapathIngress, kDatapathEgress, kWgSteering, kMssClampIngress, kMssClampEgress}) {
    if (present(ifindex, f)) return true;
  }
  return false;
}

void destroy_qdisc(int ifindex) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
              .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
  bpf_tc_hook_destroy(&hook);
}

}  // namespace uplinkd::datapath::tc
