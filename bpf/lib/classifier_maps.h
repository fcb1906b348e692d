/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Maps of the LAN classifier (lan_ingress). Layouts come from maps/uplinkd_maps.h; no pinning
 * attribute (the daemon sets pin paths before load, tests load them unpinned).
 */
#ifndef UPLINKD_BPF_LIB_CLASSIFIER_MAPS_H
#define UPLINKD_BPF_LIB_CLASSIFIER_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/flow_maps.h" /* flows, tcp_seen, flow_counters (shared with lan_egress) */
#include "lib/inbound_map.h"
#include "lib/uplink_maps.h"

/* classifier_cfg[0]: mmx_mask, live rule count, MMX_DEFAULT, idle timeouts per protocol, flags. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct classifier_cfg);
} classifier_cfg SEC(".maps");

/* rules[i]: mwan3 rule i in file order; only rules[0 .. n_rules-1] are consulted. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UPLINKD_MAX_RULES);
	__type(key, __u32);
	__type(value, struct rule_entry);
} rules SEC(".maps");

/* rule_counters[i]: per-CPU packets and bytes of the new flows rule i classified. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UPLINKD_MAX_RULES);
	__type(key, __u32);
	__type(value, struct rule_counter);
} rule_counters SEC(".maps");

/* policies[UPLINKD_POLICY_SLOT(id, family)]: the members a policy spreads new flows over now. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UPLINKD_POLICY_SLOTS);
	__type(key, __u32);
	__type(value, struct policy_entry);
} policies SEC(".maps");

/* sticky: (source address, rule) -> the uplink a sticky rule chose for that source last. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, UPLINKD_MAX_STICKY);
	__type(key, struct sticky_key);
	__type(value, struct sticky_value);
} sticky SEC(".maps");

/* connected: networks reached through the main table (mwan3's connected/custom networks). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, UPLINKD_MAX_CONNECTED);
	__type(key, struct lpm_key);
	__type(value, __u8);
} connected SEC(".maps");

/* The shape of one set: the inner-map template of `sets`. The daemon creates each set's trie
 * with the same type, key, value and flags (max_entries may differ) and stores its fd in
 * sets[id - 1]. */
struct set_trie {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, UPLINKD_MAX_SET_ENTRIES);
	__type(key, struct lpm_key);
	__type(value, __u8);
};

/* sets[id - 1]: the LPM trie of ipset/nft set `id` (rule_entry.set_id); an empty slot matches
 * nothing. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, UPLINKD_MAX_SETS);
	__type(key, __u32);
	__array(values, struct set_trie);
} sets SEC(".maps");

/* The bit-vector classifier's tables (maps/uplinkd_maps.h, "Bit-vector classifier tables"). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rule_tbl_select);
} rule_tbl_sel SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UPLINKD_RULE_TABLE_SETS);
	__type(key, __u32);
	__type(value, struct rule_tbl);
} rule_tbl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UPLINKD_RULE_PORT_SLOTS);
	__type(key, __u32);
	__type(value, struct rule_bitmap);
} rule_tbl_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, UPLINKD_RULE_ADDR_ENTRIES);
	__type(key, struct rule_addr_key);
	__type(value, struct rule_bitmap);
} rule_tbl_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, UPLINKD_RULE_IFACE_ENTRIES);
	__type(key, struct rule_iface_key);
	__type(value, struct rule_bitmap);
} rule_tbl_iface SEC(".maps");

/* rule_tbl_ext[set]: the rules each field's lookup cannot remove (maps/uplinkd_maps.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UPLINKD_RULE_TABLE_SETS);
	__type(key, __u32);
	__type(value, struct rule_tbl_ext);
} rule_tbl_ext SEC(".maps");

/* mwan3 keeps routing over an uplink until the tracker calls it offline: disconnecting counts. */
static __always_inline int uplink_usable(const struct uplink_record *u)
{
	return u && (u->state == UPLINK_STATE_ONLINE || u->state == UPLINK_STATE_DISCONNECTING);
}

static __always_inline struct uplink_record *uplink_lookup(__u32 id)
{
	return bpf_map_lookup_elem(&uplinks, &id);
}

#endif /* UPLINKD_BPF_LIB_CLASSIFIER_MAPS_H */
