/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * uplinkd map ABI: every key/value layout and constant shared by the BPF programs (C) and the
 * daemon (C++). This is the only place a map layout is written. UAPI types only, so the BPF side
 * needs no kernel BTF. Each struct has a fixed size, checked on both sides below.
 */
#ifndef UPLINKD_MAPS_H
#define UPLINKD_MAPS_H

#include <linux/types.h>

/* Uplink ids are mwan3 interface ids: 1-based position among interface sections. */
#define UPLINKD_MAX_UPLINKS 256

/* Outstanding probes across all uplinks (targets x count x uplinks, with slack for timeouts). */
#define UPLINKD_MAX_PROBES 8192

/* Ring buffer for probe replies; a power of two and a multiple of the page size. */
#define UPLINKD_RINGBUF_BYTES (256 * 1024)

/* XDP metadata tag for a matched probe reply, read by the tc ingress marker. */
#define UPLINKD_META_MAGIC 0x75706c6bU /* "uplk" */

/* Pinned map names (at most 15 characters, the kernel's limit). */
#define UPLINKD_MAP_UPLINKS "uplinks"
#define UPLINKD_MAP_PROBES "probes"
#define UPLINKD_MAP_PROBE_EVENTS "probe_events"
#define UPLINKD_MAP_COUNTERS "uplink_counters"
#define UPLINKD_MAP_ICMP_LIMITER "icmp_limiter"

/* Uplink states as the tracker reports them (mwan3track's four states, plus unknown/disabled). */
enum uplink_state {
	UPLINK_STATE_UNKNOWN = 0,
	UPLINK_STATE_OFFLINE = 1,
	UPLINK_STATE_CONNECTING = 2,
	UPLINK_STATE_ONLINE = 3,
	UPLINK_STATE_DISCONNECTING = 4,
	UPLINK_STATE_DISABLED = 5,
};

/* What a probe was; decides how XDP recognises its reply. */
enum probe_kind {
	PROBE_KIND_ICMP = 1,   /* ICMP echo: ident = echo id, seq = echo seq, nonce = first 8 payload bytes */
	PROBE_KIND_ICMPV6 = 2, /* ICMPv6 echo: same fields as ICMP */
	PROBE_KIND_TCP = 3,    /* TCP SYN: ident = our port, seq = target port, nonce = ISN; reply acks ISN+1 */
	PROBE_KIND_DNS = 4,    /* DNS over UDP: ident = our port, seq = query id; reply from port 53 */
	PROBE_KIND_ARP = 5,    /* ARP request for the gateway: ident = seq = 0; reply's sender IP = target */
};

/* uplinks[id]: what the datapath knows of uplink `id` (array map). */
struct uplink_record {
	__u32 ifindex;          /* 0 while the device does not exist */
	__u32 state;            /* enum uplink_state */
	__u32 generation;       /* bumped each time the uplink goes down; flows store it (stale-flow check) */
	__u32 mark;             /* mwan3 mark of this uplink: id spread over mmx_mask */
	__u64 icmp_limit_interval_ns; /* ICMP limiter: 1e9 / rate; 0 = limiter off */
	__u32 icmp_limit_burst;       /* ICMP limiter: packets allowed back to back */
	__u32 flags;                  /* reserved, 0 */
};

/* probes: key of one outstanding probe (hash map), written by the daemon before the probe is sent. */
struct probe_key {
	__u8 addr[16];   /* target address; IPv4 in the first 4 bytes, the rest zero */
	__u16 uplink_id; /* host order */
	__u8 kind;       /* enum probe_kind */
	__u8 pad;        /* 0 */
	__u16 ident;     /* host order; see enum probe_kind */
	__u16 seq;       /* host order; see enum probe_kind */
};

/* probes: value of one outstanding probe. */
struct probe_value {
	__u64 sent_ns; /* CLOCK_MONOTONIC (= bpf_ktime_get_ns) at send */
	__u64 nonce;   /* random per probe; see enum probe_kind; 0 for DNS and ARP */
};

/* probe_events: one ring buffer record per matched reply. */
struct probe_reply_event {
	struct probe_key key;
	__u64 sent_ns;
	__u64 rtt_ns;
	__u32 ifindex;
	__u32 pad;
};

/* uplink_counters[id]: per-CPU counters per uplink (the daemon sums CPUs). */
struct uplink_counters {
	__u64 probe_replies;  /* matched replies, reported to the daemon */
	__u64 nonce_mismatch; /* key matched but nonce did not: forged or stale, passed unmarked */
	__u64 ringbuf_full;   /* matched but the ring buffer had no room (the daemon will count a loss) */
	__u64 icmp_passed;    /* ICMP/ICMPv6 packets the limiter let through (limiter on) */
	__u64 icmp_dropped;   /* ICMP/ICMPv6 packets the limiter dropped */
	__u64 probe_replies_exempted; /* matched replies that passed while the limiter was over its rate */
};

/* icmp_limiter[id]: state of the per-uplink ICMP limiter (array map). */
struct icmp_limiter_state {
	__u64 tat_ns; /* GCRA theoretical arrival time */
};

/* XDP -> tc metadata in front of a matched probe reply. */
struct probe_reply_meta {
	__u32 magic; /* UPLINKD_META_MAGIC */
	__u32 uplink_id;
};

#define UPLINKD_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#ifdef __cplusplus
#undef UPLINKD_STATIC_ASSERT
#define UPLINKD_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#endif

UPLINKD_STATIC_ASSERT(sizeof(struct uplink_record) == 32, "uplink_record layout");
UPLINKD_STATIC_ASSERT(sizeof(struct probe_key) == 24, "probe_key layout");
UPLINKD_STATIC_ASSERT(sizeof(struct probe_value) == 16, "probe_value layout");
UPLINKD_STATIC_ASSERT(sizeof(struct probe_reply_event) == 48, "probe_reply_event layout");
UPLINKD_STATIC_ASSERT(sizeof(struct uplink_counters) == 48, "uplink_counters layout");
UPLINKD_STATIC_ASSERT(sizeof(struct icmp_limiter_state) == 8, "icmp_limiter_state layout");
UPLINKD_STATIC_ASSERT(sizeof(struct probe_reply_meta) == 8, "probe_reply_meta layout");

#endif /* UPLINKD_MAPS_H */
