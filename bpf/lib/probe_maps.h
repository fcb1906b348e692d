/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Maps of the probe-reply path: outstanding probes in, matched replies out. Layouts come from
 * maps/uplinkd_maps.h; no pinning attribute (the daemon sets pin paths before load).
 */
#ifndef UPLINKD_BPF_LIB_PROBE_MAPS_H
#define UPLINKD_BPF_LIB_PROBE_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"

/* probes: outstanding probes, inserted by the daemon before sending, deleted by the first reply.
 * Preallocated (the default), so neither side allocates on the packet path. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, UPLINKD_MAX_PROBES);
	__type(key, struct probe_key);
	__type(value, struct probe_value);
} probes SEC(".maps");

/* probe_events: one struct probe_reply_event per matched reply, read by the daemon. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, UPLINKD_RINGBUF_BYTES);
} probe_events SEC(".maps");

#endif /* UPLINKD_BPF_LIB_PROBE_MAPS_H */
