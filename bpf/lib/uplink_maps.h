/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Per-uplink maps shared by every program instance (one instance per uplink). Layouts come from
 * maps/uplinkd_maps.h. No pinning attribute: the daemon sets pin paths before load so all
 * instances share one set of maps, and tests load them unpinned.
 */
#ifndef UPLINKD_BPF_LIB_UPLINK_MAPS_H
#define UPLINKD_BPF_LIB_UPLINK_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"

/* uplinks[id]: the daemon's view of uplink id (state, mark, limiter settings). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UPLINKD_MAX_UPLINKS);
	__type(key, __u32);
	__type(value, struct uplink_record);
} uplinks SEC(".maps");

/* uplink_counters[id]: per-CPU datapath statistics, summed by the daemon. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UPLINKD_MAX_UPLINKS);
	__type(key, __u32);
	__type(value, struct uplink_counters);
} uplink_counters SEC(".maps");

#endif /* UPLINKD_BPF_LIB_UPLINK_MAPS_H */
