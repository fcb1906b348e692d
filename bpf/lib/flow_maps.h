/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The per-flow maps both LAN-side programs use: lan_ingress decides flows and answers stale ones,
 * lan_egress learns what a RST toward the client needs. Their own header (included by
 * lib/classifier_maps.h) so lan_egress does not create the classifier's rule and policy maps.
 * Layouts come from maps/uplinkd_maps.h; no pinning attribute (the daemon pins them by name, so
 * both programs share one instance of each; tests load them unpinned).
 */
#ifndef UPLINKD_BPF_LIB_FLOW_MAPS_H
#define UPLINKD_BPF_LIB_FLOW_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"

/* flows: the decision of every flow seen, by its LAN-side 5-tuple. LRU: idle flows make room. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, UPLINKD_MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

/* tcp_seen: per TCP flow with an uplink, the next sequence number toward the LAN client and how
 * to reach it (written by lan_egress, read by the daemon's proactive reset). LRU like flows. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, UPLINKD_MAX_TCP_SEEN);
	__type(key, struct flow_key);
	__type(value, struct tcp_seen);
} tcp_seen SEC(".maps");

/* flow_counters[0]: per-CPU counters of flow decisions and stale-flow handling. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_counters);
} flow_counters SEC(".maps");

static __always_inline struct flow_counters *flow_counters_here(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&flow_counters, &zero);
}

#endif /* UPLINKD_BPF_LIB_FLOW_MAPS_H */
