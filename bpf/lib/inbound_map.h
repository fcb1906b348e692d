/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The one map the uplink side (wan_ingress) and the LAN side (lan_ingress) share besides `uplinks`:
 * remote endpoints of connections that arrived on an uplink. Its own header so wan_ingress does not
 * create the classifier's maps. Layouts come from maps/uplinkd_maps.h; no pinning attribute (the
 * daemon sets pin paths before load so every object shares one instance).
 */
#ifndef UPLINKD_BPF_LIB_INBOUND_MAP_H
#define UPLINKD_BPF_LIB_INBOUND_MAP_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"

/* Entries are refreshed at most once a second per endpoint, so an active one never looks idle for
 * longer than that to the LAN side's freshness check. */
#define UPLINKD_REFRESH_NS 1000000000ULL

/* inbound: (remote address, remote port, proto, family) -> the uplink the connection came in on.
 * LRU: a port-forward flood evicts old endpoints instead of failing inserts. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, UPLINKD_MAX_INBOUND);
	__type(key, struct inbound_key);
	__type(value, struct inbound_value);
} inbound SEC(".maps");

#endif /* UPLINKD_BPF_LIB_INBOUND_MAP_H */
