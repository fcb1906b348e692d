/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The first fragment's decision, for the later fragments of its datagram. Only the first fragment
 * of a datagram carries the ports, so lan_ingress decides it by the full 5-tuple (as it would an
 * unfragmented packet of the flow) and files the mark here under the datagram's identity; a later
 * fragment takes that mark. A later fragment that finds nothing (it overtook its first fragment,
 * or the entry is gone) is decided by its portless key, as every fragment was before.
 * Layouts come from maps/uplinkd_maps.h; no pinning attribute (see UPLINKD_MAX_FRAGMENTS).
 */
#ifndef UPLINKD_BPF_LIB_FRAG_MAP_H
#define UPLINKD_BPF_LIB_FRAG_MAP_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "maps/uplinkd_maps.h"
#include "lib/flow_parse.h"
#include "lib/parse.h"

/* A datagram's fragments arrive within milliseconds. A later fragment finding an entry older than
 * this takes it for another datagram that reused the identification (IPv4's 16 bits wrap after
 * 65536 datagrams between two hosts) and falls back to its portless key. */
#define UPLINKD_FRAG_TIMEOUT_NS 1000000000ULL

/* fragments: (family, proto, saddr, daddr, identification) -> the first fragment's mark. LRU: old
 * datagrams, long complete, make room. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, UPLINKD_MAX_FRAGMENTS);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
} fragments SEC(".maps");

static __always_inline void frag_key_for(struct frag_key *key, const struct flow_key *flow,
					 const struct frag_info *frag)
{
	copy_bytes16(key->saddr, flow->saddr);
	copy_bytes16(key->daddr, flow->daddr);
	key->id = frag->id;
	key->proto = flow->proto;
	key->family = flow->family;
}

/* The first fragment's decision, for the fragments after it. */
static __always_inline void remember_first_fragment(const struct flow_key *flow,
						    const struct frag_info *frag, __u32 mark,
						    __u16 uplink_id, __u64 now)
{
	struct frag_key key = {};
	struct frag_value v = {};

	frag_key_for(&key, flow, frag);
	v.first_seen_ns = now;
	v.mark = mark;
	v.uplink_id = uplink_id;
	bpf_map_update_elem(&fragments, &key, &v, BPF_ANY);
}

/* The entry of a later fragment's datagram, or NULL when its first fragment was not seen (or was
 * seen too long ago). flow is the fragment's portless key: its addresses, proto and family are the
 * datagram's. */
static __always_inline const struct frag_value *
first_fragment_of(const struct flow_key *flow, const struct frag_info *frag, __u64 now)
{
	struct frag_key key = {};
	struct frag_value *v;

	frag_key_for(&key, flow, frag);
	v = bpf_map_lookup_elem(&fragments, &key);
	if (!v)
		return 0;
	/* A stamp from the future (another CPU's clock read was later) counts as fresh. */
	if (now > v->first_seen_ns && now - v->first_seen_ns >= UPLINKD_FRAG_TIMEOUT_NS)
		return 0;
	return v;
}

#endif /* UPLINKD_BPF_LIB_FRAG_MAP_H */
