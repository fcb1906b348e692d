// tc filters that components beside the main datapath attach (WireGuard steering on uplinks, MSS
// clamping on WireGuard devices): one filter at a time by its handle and priority, the clsact
// qdisc created when a device has none, and whether another of uplinkd's filters still needs that
// qdisc when one goes. The datapath's own attach code (datapath.cpp) predates this file.
#pragma once

#include <bpf/libbpf.h>

#include <cstdint>
#include <string>

namespace uplinkd::datapath::tc {

// One of uplinkd's filters: the hook it sits on and the handle and priority that name it there,
// so detach removes exactly it and nobody else's.
struct Filter {
  bpf_tc_attach_point point;  // BPF_TC_INGRESS or BPF_TC_EGRESS
  uint32_t handle;
  uint32_t priority;
};

// The datapath's (datapath.cpp): wan_ingress or lan_ingress on ingress, lan_egress on egress. ("up")
inline constexpr Filter kDatapathIngress{BPF_TC_INGRESS, 0x7570, 0x7570};
inline constexpr Filter kDatapathEgress{BPF_TC_EGRESS, 0x7570, 0x7570};
// WireGuard steering (wg_steering.cpp) on an uplink's egress. ("wg")
inline constexpr Filter kWgSteering{BPF_TC_EGRESS, 0x7767, 0x7767};
// MSS clamping (mss_clamp.cpp) on both hooks of a WireGuard device. ("ms")
inline constexpr Filter kMssClampIngress{BPF_TC_INGRESS, 0x6d73, 0x6d73};
inline constexpr Filter kMssClampEgress{BPF_TC_EGRESS, 0x6d73, 0x6d73};

// "No such device (errno 19)"; err may be negative.
std::string errno_text(int err);
// "ingress" or "egress".
const char* direction(bpf_tc_attach_point point);
// What fixes a failed attach with this errno, for the message a person reads.
std::string attach_hint(int err, bpf_tc_attach_point point);
bool device_exists(int ifindex);

struct AttachResult {
  int err = 0;                 // 0, or the negative errno of the step that failed
  bool qdisc_failed = false;   // that step was creating the clsact qdisc (else attaching the filter)
  bool qdisc_created = false;  // this call created the clsact qdisc (it stays only on success)
};

// Attaches `prog_fd` as `filter` on `ifindex`. REPLACE: a filter left at the same handle and
// priority by a daemon that crashed is taken over, not refused. A clsact qdisc this call created
// is removed again when the filter cannot be attached. qdisc_known: the caller just made sure the
// qdisc is there (the second hook of a device), so no creation is tried: the kernel's EEXIST
// message ("Exclusivity flag on") stays out of the log.
AttachResult attach(int ifindex, const Filter& filter, int prog_fd, bool qdisc_known = false);
// Removes `filter` (nothing when it is not there).
void detach(int ifindex, const Filter& filter);
// Whether `filter` is on the device. Quiet: libbpf's printer is off for the query.
bool present(int ifindex, const Filter& filter);
// Whether any of uplinkd's filters above is on the device: while one is, the clsact qdisc is not
// for anyone to remove, whoever created it.
bool uplinkd_filters_present(int ifindex);
// Removes the device's clsact qdisc, with every filter on both hooks.
void destroy_qdisc(int ifindex);

}  // namespace uplinkd::datapath::tc
