/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Maps of WireGuard endpoint steering (uplink_egress, tc egress on uplinks). Layouts come from
 * maps/uplinkd_maps.h. No pinning attribute: the daemon sets pin paths before load, so every
 * per-uplink instance shares one set, and tests load them unpinned. The program also reads the
 * classifier's `policies` (lib/classifier_maps.h), pinned under the same name.
 */
#ifndef UPLINKD_BPF_LIB_WG_MAPS_H
#define UPLINKD_BPF_LIB_WG_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"

/* wg_endpoints: (peer address, port, family) -> the policy it follows and its counter slot.
 * Preallocated: the packet path never allocates, and the daemon's writes cannot fail for memory. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, UPLINKD_MAX_WG_ENDPOINTS);
	__type(key, struct wg_endpoint_key);
	__type(value, struct wg_endpoint_value);
} wg_endpoints SEC(".maps");

/* wg_counters[endpoint_id]: per-CPU steered / passed / failed packets of one endpoint. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UPLINKD_MAX_WG_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct wg_counters);
} wg_counters SEC(".maps");

/* uplink_egress[id]: device, source addresses and gateways to send by uplink `id`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UPLINKD_MAX_UPLINKS);
	__type(key, __u32);
	__type(value, struct uplink_egress);
} uplink_egress SEC(".maps");

#endif /* UPLINKD_BPF_LIB_WG_MAPS_H */
