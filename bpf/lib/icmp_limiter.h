/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Per-uplink ICMP/ICMPv6 flood limiter: "rate R/second, burst B packets, drop the excess", done as
 * GCRA (generic cell rate algorithm) on one 64-bit theoretical arrival time (TAT) per uplink.
 *
 * GCRA with emission interval T = 1e9/R and tolerance tau = (B - 1) * T: a packet arriving at
 * `now` conforms when max(TAT, now) - now <= tau, and then moves TAT to max(TAT, now) + T. From an
 * idle bucket that admits B packets back to back, then one per T. A refused packet leaves TAT
 * alone, so a flood does not push the schedule further out.
 *
 * The state is one array slot shared by all CPUs, updated lock-free:
 *  - "exhausted" is decided on a plain read: a flood costs each CPU a cache-line read and no
 *    contended write;
 *  - restarting an idle bucket (TAT in the past) is a compare-and-swap, so two CPUs that both see
 *    it idle do not both restart it; the loser falls through to the busy path;
 *  - on the busy path __sync_fetch_and_add reserves one interval and returns the TAT it started
 *    from, which decides conformance exactly; an overshooting CPU hands its interval back.
 * Races accepted: (1) between an overshooting add and its hand-back other CPUs see TAT one interval
 * late and may refuse a packet they could have passed: this errs towards dropping, never passing;
 * (2) if that CPU stalls between the two atomics long enough for the bucket to go idle and be
 * restarted, the hand-back lands on the new schedule and admits one packet too many. XDP runs with
 * preemption off in softirq, so the window is a few instructions; the excess is at most one packet
 * per CPU per such stall.
 */
#ifndef UPLINKD_BPF_LIB_ICMP_LIMITER_H
#define UPLINKD_BPF_LIB_ICMP_LIMITER_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"

/* icmp_limiter[id]: GCRA state of uplink id's ICMP limiter, shared by all CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UPLINKD_MAX_UPLINKS);
	__type(key, __u32);
	__type(value, struct icmp_limiter_state);
} icmp_limiter SEC(".maps");

struct icmp_limit {
	__u64 interval_ns;  /* T; 0 = limiter off */
	__u64 tolerance_ns; /* tau */
};

static __always_inline struct icmp_limit icmp_limit_of(const struct uplink_record *uplink)
{
	struct icmp_limit limit = {};
	__u32 burst;

	if (!uplink)
		return limit;
	limit.interval_ns = uplink->icmp_limit_interval_ns;
	/* A burst of 0 would refuse everything; read it as 1, the smallest burst that passes traffic. */
	burst = uplink->icmp_limit_burst ? uplink->icmp_limit_burst : 1;
	limit.tolerance_ns = (__u64)(burst - 1) * limit.interval_ns;
	return limit;
}

static __always_inline __u64 icmp_limiter_read_tat(struct icmp_limiter_state *state)
{
	return *(volatile __u64 *)&state->tat_ns;
}

/* True when the next non-exempt ICMP packet would be dropped. Read-only. */
static __always_inline int icmp_limiter_exhausted(struct icmp_limiter_state *state,
						  const struct icmp_limit *limit, __u64 now)
{
	return icmp_limiter_read_tat(state) > now + limit->tolerance_ns;
}

/* True: the packet conforms and has been charged one interval. False: drop it. */
static __always_inline int icmp_limiter_admit(struct icmp_limiter_state *state,
					      const struct icmp_limit *limit, __u64 now)
{
	__u64 tat = icmp_limiter_read_tat(state);
	__u64 prev;

	if (tat > now + limit->tolerance_ns)
		return 0;
	if (tat < now &&
	    __sync_val_compare_and_swap(&state->tat_ns, tat, now + limit->interval_ns) == tat)
		return 1;

	prev = __sync_fetch_and_add(&state->tat_ns, limit->interval_ns);
	if (prev <= now + limit->tolerance_ns)
		return 1;
	__sync_fetch_and_add(&state->tat_ns, -limit->interval_ns);
	return 0;
}

#endif /* UPLINKD_BPF_LIB_ICMP_LIMITER_H */
