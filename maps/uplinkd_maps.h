/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * uplinkd map ABI: every key/value layout and constant shared by the BPF programs (C) and the
 * daemon (C++). This is the only place a map layout is written. UAPI types only, so the BPF side
 * needs no kernel BTF. Each struct has a fixed size, checked on both sides below.
 */
#ifndef UPLINKD_MAPS_H
#define UPLINKD_MAPS_H

#include <linux/types.h>

/*
 * Layout version of everything below. A daemon that finds pins of another version (an upgrade that
 * changed a struct, a constant or a map's type) does not reuse them: it starts with fresh maps and
 * says what was lost (loader/datapath/pin_adoption.cpp). Bump it with every change of a layout or
 * of the meaning of a field; a size check below catches most changes that forget to.
 */
#define UPLINKD_MAPS_LAYOUT_VERSION 2

/* daemon_state: one record (array map, key 0) that outlives each daemon, written only by the daemon
 * once a start has succeeded. It names the layout of the pins beside it and the last daemon that
 * owned them, so a successor can adopt them. Created by the daemon, not by a BPF object. */
#define UPLINKD_MAP_DAEMON_STATE "daemon_state"
struct daemon_state {
	__u32 layout_version;  /* UPLINKD_MAPS_LAYOUT_VERSION of the daemon that wrote it */
	__u32 pid;	       /* that daemon's pid */
	__u64 started_unix_ns; /* when its start succeeded (CLOCK_REALTIME) */
	__u32 flags;	       /* reserved, 0 */
	__u32 pad;
};

/* tc_qdiscs: ifindex -> 1 for every clsact qdisc uplinkd created (hash map, created by the daemon),
 * so that a full stop removes exactly those even when an earlier daemon created them. */
#define UPLINKD_MAP_TC_QDISCS "tc_qdiscs"
#define UPLINKD_MAX_TC_QDISCS 1024

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
	PROBE_KIND_ICMP =
	    1, /* ICMP echo: ident = echo id, seq = echo seq, nonce = first 8 payload bytes */
	PROBE_KIND_ICMPV6 = 2, /* ICMPv6 echo: same fields as ICMP */
	PROBE_KIND_TCP =
	    3, /* TCP SYN: ident = our port, seq = target port, nonce = ISN; reply acks ISN+1 */
	PROBE_KIND_DNS = 4, /* DNS over UDP: ident = our port, seq = query id; reply from port 53 */
	PROBE_KIND_ARP =
	    5, /* ARP request for the gateway: ident = seq = 0; reply's sender IP = target */
	PROBE_KIND_UDP =
	    6, /* nping-udp: ident = our port (UPLINKD_UDP_PROBE_PORT_*), seq = target port, nonce =
		* the first 8 payload bytes; answered by an echo of them or an ICMP port unreachable
		* quoting them */
};

/* Local ports of the nping-udp probes: a small fixed range above Linux's default ephemeral range
 * (32768-60999), so XDP can pass every other UDP packet on one range compare before any lookup. */
#define UPLINKD_UDP_PROBE_PORT_MIN 61000
#define UPLINKD_UDP_PROBE_PORT_COUNT 256

/* uplinks[id]: what the datapath knows of uplink `id` (array map). */
struct uplink_record {
	__u32 ifindex;	  /* 0 while the device does not exist */
	__u32 state;	  /* enum uplink_state */
	__u32 generation; /* bumped each time the uplink goes down; flows store it (stale-flow
			     check) */
	__u32 mark;	  /* mwan3 mark of this uplink: id spread over mmx_mask */
	__u64 icmp_limit_interval_ns; /* ICMP limiter: 1e9 / rate; 0 = limiter off */
	__u32 icmp_limit_burst;	      /* ICMP limiter: packets allowed back to back */
	__u32 flags;		      /* reserved, 0 */
};

/* probes: key of one outstanding probe (hash map), written by the daemon before the probe is sent.
 */
struct probe_key {
	__u8 addr[16];	 /* target address; IPv4 in the first 4 bytes, the rest zero */
	__u16 uplink_id; /* host order */
	__u8 kind;	 /* enum probe_kind */
	__u8 pad;	 /* 0 */
	__u16 ident;	 /* host order; see enum probe_kind */
	__u16 seq;	 /* host order; see enum probe_kind */
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
	__u64 ringbuf_full;   /* matched but the ring buffer had no room (the daemon will count a
				 loss) */
	__u64 icmp_passed;    /* ICMP/ICMPv6 packets the limiter let through (limiter on) */
	__u64 icmp_dropped;   /* ICMP/ICMPv6 packets the limiter dropped */
	__u64 probe_replies_exempted; /* matched replies that passed while the limiter was over its
					 rate */
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

/* ---- Policy routing (LAN classifier, WAN inbound) ------------------------------------------- */

#define UPLINKD_MAX_RULES 256	      /* mwan3 rules, in order; first match wins */
#define UPLINKD_RULE_MAX_ADDRS 8      /* CIDRs per src_ip / dest_ip list */
#define UPLINKD_RULE_MAX_PORTS 8      /* ports or ranges per src_port / dest_port list */
#define UPLINKD_MAX_POLICIES 64	      /* policy ids 0 .. 63 */
#define UPLINKD_POLICY_MAX_MEMBERS 16 /* members sharing the lowest online metric */
#define UPLINKD_MAX_FLOWS 262144      /* LRU: flows remembered with their decision */
#define UPLINKD_MAX_STICKY 65536      /* LRU: (source, rule) -> last uplink */
#define UPLINKD_MAX_INBOUND                                                                        \
	65536 /* LRU: remote endpoints of connections that came in on an uplink */
#define UPLINKD_MAX_CONNECTED 4096 /* connected / custom networks (mwan3 step 3) */
#define UPLINKD_MAX_SETS 16	   /* ipset / nft set rules */
#define UPLINKD_MAX_SET_ENTRIES 65536

#define UPLINKD_MAP_CLASSIFIER_CFG "classifier_cfg"
#define UPLINKD_MAP_RULES "rules"
#define UPLINKD_MAP_RULE_COUNTERS "rule_counters"
#define UPLINKD_MAP_POLICIES "policies"
#define UPLINKD_MAP_FLOWS "flows"
#define UPLINKD_MAP_STICKY "sticky"
#define UPLINKD_MAP_INBOUND "inbound"
#define UPLINKD_MAP_CONNECTED "connected"
#define UPLINKD_MAP_SETS "sets" /* array of maps: set id -> LPM trie of struct lpm_key */

/* Addresses in LPM maps: IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d) with prefixlen + 96, so one
 * trie serves both families. `connected` and every trie in `sets` map struct lpm_key to a __u8
 * (1; presence is the match) and are created with BPF_F_NO_PREALLOC, as the kernel requires of LPM
 * tries; an inner trie may have any max_entries (the template has UPLINKD_MAX_SET_ENTRIES). */
struct lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* classifier_cfg.flags */
#define UPLINKD_CFG_RESET_STALE_TCP (1U << 0) /* answer a packet on a stale TCP flow with a RST */

/* classifier_cfg[0]: settings the daemon can change without reloading programs. Idle flows are
 * classified again after the timeout of their protocol; 0 never expires. */
struct classifier_cfg {
	__u32 mmx_mask;	    /* mwan3 mask; only these bits of skb->mark are ours */
	__u32 n_rules;	    /* rules[0 .. n_rules-1] are live */
	__u32 default_mark; /* MMX_DEFAULT: the main table (connected networks, policy `default`) */
	__u32 flow_timeout_s;	  /* protocols other than TCP and UDP */
	__u32 flow_timeout_tcp_s; /* TCP */
	__u32 flow_timeout_udp_s; /* UDP */
	__u32 flags;		  /* UPLINKD_CFG_* */
	__u32 pad;		  /* 0 */
};

struct addr_match {
	__u8 addr[16];	/* IPv4 in the first 4 bytes */
	__u8 prefixlen; /* 0..32 (IPv4) or 0..128 (IPv6) */
	__u8 family;	/* 4 or 6 */
	__u8 pad[2];
};

struct port_range {
	__u16 lo; /* host order, inclusive */
	__u16 hi;
};

/* rules[i]: one mwan3 rule. Empty lists match anything; ports only for TCP and UDP (mwan3). */
struct rule_entry {
	__u8 family; /* 0 any, 4, 6 */
	__u8 proto;  /* 0 all, else IPPROTO_* (tcp 6, udp 17, icmp 1, ...) */
	__u8 n_src;
	__u8 n_dst;
	__u8 n_sport;
	__u8 n_dport;
	__u8 sticky; /* 1: reuse the source's last uplink for this rule within sticky_timeout_s */
	__u8 set_id; /* 0 none, else 1..UPLINKD_MAX_SETS: destination must be in that set */
	__u32 src_ifindex; /* 0 any */
	__u32 policy_id;   /* index into policies */
	__u32 sticky_timeout_s;
	struct addr_match src[UPLINKD_RULE_MAX_ADDRS];
	struct addr_match dst[UPLINKD_RULE_MAX_ADDRS];
	struct port_range sport[UPLINKD_RULE_MAX_PORTS];
	struct port_range dport[UPLINKD_RULE_MAX_PORTS];
};

/* rule_counters[i]: per-CPU packets and bytes of new flows that matched rule i. */
struct rule_counter {
	__u64 packets;
	__u64 bytes;
};

/* ---- Bit-vector classifier tables (DESIGN.md, "Classifying new flows at a cost independent of
 * the number of rules") ----
 * Rule i is bit i of a struct rule_bitmap (word i / 64, bit i % 64): rule order is bit order, so
 * the first set bit of the AND of one bitmap per field is mwan3's first match. The daemon compiles
 * the tables from the same rule_entry list it writes to `rules` (loader/policy/rule_tables.h) into
 * two table sets, 0 and 1: it rewrites the set rule_tbl_sel does not name, then flips
 * rule_tbl_sel.active in one update, so a packet reads one whole set or the other. `rules` keeps
 * the per-rule actions (policy, sticky) and rule_counters the counters, by the same index.
 *
 * Memory per table set: rule_tbl 74.6 KB (family, protocol, set and port-boundary arrays),
 * rule_tbl_ports 2 x 4097 x 32 B = 262 KB (one bitmap per elementary port interval and direction,
 * found by a binary search of the boundaries: 13 steps), rule_tbl_iface up to 256 x 32 B, and
 * rule_tbl_addr up to 4100 prefixes x 32 B. Two sets: about 0.7 MB allocated up front (ports
 * 524 KB, rule_tbl 149 KB, the interface hash), plus the trie's entries as they are written (at
 * most 8200, a few hundred KB with the kernel's node overhead); no 65536-entry port arrays. */
#define UPLINKD_RULE_WORDS (UPLINKD_MAX_RULES / 64)
#define UPLINKD_RULE_TABLE_SETS 2
/* Elementary port intervals per direction: every range adds at most two boundaries (lo, hi + 1)
 * to the one at port 0. */
#define UPLINKD_PORT_INTERVALS (2 * UPLINKD_MAX_RULES * UPLINKD_RULE_MAX_PORTS + 1)
#define UPLINKD_PORT_SEARCH_STEPS 13 /* 2^13 > UPLINKD_PORT_INTERVALS */
/* port_start entries per direction: a power of two, so the branch-free search's probes stay in
 * bounds; the entries past the last boundary hold UPLINKD_PORT_PAST (above every port). */
#define UPLINKD_PORT_SEARCH_SLOTS (1 << UPLINKD_PORT_SEARCH_STEPS)
#define UPLINKD_PORT_PAST 0x10000U
/* Per set: every address of every list in both directions, plus a root (/0) per direction and
 * family, which every lookup of that direction and family finds at least. */
#define UPLINKD_RULE_ADDR_ENTRIES                                                                  \
	(UPLINKD_RULE_TABLE_SETS * (2 * UPLINKD_MAX_RULES * UPLINKD_RULE_MAX_ADDRS + 4))
#define UPLINKD_RULE_IFACE_ENTRIES (UPLINKD_RULE_TABLE_SETS * UPLINKD_MAX_RULES)

#define UPLINKD_MAP_RULE_TBL_SEL "rule_tbl_sel"
#define UPLINKD_MAP_RULE_TBL "rule_tbl"
#define UPLINKD_MAP_RULE_TBL_PORTS "rule_tbl_ports"
#define UPLINKD_MAP_RULE_TBL_ADDR "rule_tbl_addr"
#define UPLINKD_MAP_RULE_TBL_IFACE "rule_tbl_iface"

#define UPLINKD_RULE_DIR_SRC 0
#define UPLINKD_RULE_DIR_DST 1

struct rule_bitmap {
	__u64 w[UPLINKD_RULE_WORDS];
};

/* rule_tbl_sel[0]: the table set packets use now. A new map rather than classifier_cfg.pad: every
 * writer of classifier_cfg (this daemon's write_classifier_cfg, an older binary over the same
 * pins, the tests) writes the whole struct with pad 0, and would flip the tables behind the
 * compiler's back. */
struct rule_tbl_select {
	__u32 active;	  /* 0 or 1 */
	__u32 generation; /* counts flips, for tests and `bpftool map dump` */
};

/* rule_tbl[set]: the tables of one set that are plain arrays. */
struct rule_tbl {
	struct rule_bitmap family[2];  /* [0] IPv4 packets, [1] IPv6: rules of that family or any */
	struct rule_bitmap proto[256]; /* rules of that protocol or of all */
	/* rules without src_iface: what an ifindex rule_tbl_iface lacks gets */
	struct rule_bitmap any_iface;
	/* rules without port lists: all that a packet without ports can meet */
	struct rule_bitmap no_ports;
	struct rule_bitmap set_rules;		     /* rules with an ipset */
	struct rule_bitmap by_set[UPLINKD_MAX_SETS]; /* by_set[k]: rules whose set_id is k + 1 */
	__u8 rule_set[UPLINKD_MAX_RULES];	     /* set_id of each rule (0 none) */
	__u32 n_port_starts[2];			     /* [UPLINKD_RULE_DIR_*]: 1 .. INTERVALS */
	/* port_start[dir][k]: first port (host order) of interval k, ascending, [0] = 0, then
	 * UPLINKD_PORT_PAST up to the end. Interval k spans port_start[dir][k] ..
	 * port_start[dir][k + 1] - 1 (the last one to 65535); its bitmap is
	 * rule_tbl_ports[UPLINKD_RULE_PORT_SLOT(set, dir, k)]. */
	__u32 port_start[2][UPLINKD_PORT_SEARCH_SLOTS];
};

#define UPLINKD_RULE_PORT_SLOT(set, dir, k) (((set)*2 + (dir)) * UPLINKD_PORT_INTERVALS + (k))
#define UPLINKD_RULE_PORT_SLOTS (UPLINKD_RULE_TABLE_SETS * 2 * UPLINKD_PORT_INTERVALS)

/* rule_tbl_addr (LPM trie) key: the set, direction and family are the first 32 bits of the prefix,
 * so prefixlen = 32 + the address prefix; an IPv4 address sits in addr[0..3]. The value is the
 * bitmap of rules that accept every address the prefix covers: those with an entry covering it
 * and those whose list is empty (prefix closure: an LPM lookup returns the longest match only). */
struct rule_addr_key {
	__u32 prefixlen;
	__u8 set;
	__u8 dir;    /* UPLINKD_RULE_DIR_* */
	__u8 family; /* 4 or 6 */
	__u8 pad;
	__u8 addr[16];
};

/* rule_tbl_iface (hash) key; the value is the bitmap of rules with that src_ifindex, ORed with
 * rule_tbl.any_iface. */
struct rule_iface_key {
	__u32 set;
	__u32 ifindex;
};

/* rule_tbl_ext[set]: what came after rule_tbl was pinned (a new map rather than fields of it, so
 * its layout stays), written with its table set before the flip. An entry left zero (a set written
 * by an older daemon) changes nothing: every lookup is made, the full port search used.
 * - any_addr, any_port: the rules that accept every value of a field, so a new flow skips that
 *   field's lookup when every rule still in the running accepts anything there (no rule constrains
 *   the field, or those that do were already ruled out by family or protocol): the lookup could
 *   not remove a rule. The interface's is rule_tbl.any_iface.
 * - port_start_small: rule_tbl.port_start[dir] in 64 slots when its boundaries fit (small_ports
 *   1), searched in 6 steps over 4 cache lines instead of 13 steps over 13; the interval index is
 *   the same. */
#define UPLINKD_MAP_RULE_TBL_EXT "rule_tbl_ext"
#define UPLINKD_PORT_SMALL_STEPS 6
#define UPLINKD_PORT_SMALL_SLOTS (1 << UPLINKD_PORT_SMALL_STEPS)

struct rule_tbl_ext {
	/* [UPLINKD_RULE_DIR_*][0 IPv4, 1 IPv6]: rules whose address list is empty or holds a /0 of
	 * the family (the root entry of rule_tbl_addr) */
	struct rule_bitmap any_addr[2][2];
	struct rule_bitmap any_port[2]; /* [UPLINKD_RULE_DIR_*]: rules without a port list there */
	__u32 small_ports[2];		/* [UPLINKD_RULE_DIR_*]: 1 when port_start_small is that dir's */
	__u32 port_start_small[2][UPLINKD_PORT_SMALL_SLOTS]; /* padded with UPLINKD_PORT_PAST */
};

/* policies[UPLINKD_POLICY_SLOT(id, family)]: what policy `id` resolves to now for one address
 * family. mwan3 resolves every policy per family (a member counts only for its interface's
 * family), and a rule of family `any` uses both, so each id has an IPv4 slot and an IPv6 slot.
 * Rewritten whole by the daemon (one atomic update) whenever an uplink's state changes. */
#define UPLINKD_POLICY_SLOT(id, family) ((id)*2 + ((family) == 6 ? 1 : 0))
#define UPLINKD_POLICY_SLOTS (UPLINKD_MAX_POLICIES * 2)

struct policy_entry {
	__u32 n_members;     /* 0: none online, use fallback_mark (last_resort) */
	__u32 fallback_mark; /* last_resort: unreachable, blackhole or default mark */
	/* Cumulative weight shares scaled to 2^32 - 1: a flow takes the first member i with
	 * hash <= threshold[i]; the last member's threshold is 0xFFFFFFFF. */
	__u32 threshold[UPLINKD_POLICY_MAX_MEMBERS];
	__u32 mark[UPLINKD_POLICY_MAX_MEMBERS];
	__u16 uplink_id[UPLINKD_POLICY_MAX_MEMBERS];
};

/* flows: a flow's decision, keyed by its 5-tuple as the LAN side first saw it. */
struct flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport; /* network order */
	__u16 dport; /* network order */
	__u8 proto;
	__u8 family; /* 4 or 6 */
	__u16 pad;
};

enum flow_origin {
	FLOW_ORIGIN_RULE = 1,	   /* classified by a rule and its policy */
	FLOW_ORIGIN_CONNECTED = 2, /* destination in a connected network: main table */
	FLOW_ORIGIN_INBOUND = 3,   /* reply of a connection that came in on an uplink */
	FLOW_ORIGIN_UNMATCHED = 4, /* no rule matched: left unmarked */
};

struct flow_value {
	__u64 last_seen_ns;
	__u32 mark;	  /* the mwan3 mark bits (under mmx_mask) */
	__u32 generation; /* uplinks[uplink_id].generation at decision time */
	__u16 uplink_id;  /* 0 when the mark is not an uplink's */
	__u16 rule_id;	  /* rule index + 1; 0 none */
	__u8 origin;	  /* enum flow_origin */
	__u8 pad[3];
};

/* sticky: (source address, rule) -> the uplink chosen last. */
struct sticky_key {
	__u8 saddr[16];
	__u32 rule_id;
	__u8 family;
	__u8 pad[3];
};

struct sticky_value {
	__u64 last_seen_ns;
	__u32 generation; /* stale once the uplink's generation moved on (it went down) */
	__u16 uplink_id;
	__u16 pad;
	__u32 mark;
	__u32 pad2;
};

/* inbound: remote endpoints of connections that arrived on an uplink. Keyed by what DNAT leaves
 * unchanged (the remote's address and port), so the LAN host's replies find their uplink. */
struct inbound_key {
	__u8 raddr[16];
	__u16 rport; /* network order */
	__u8 proto;
	__u8 family;
};

struct inbound_value {
	__u64 last_seen_ns;
	__u32 mark;
	__u16 uplink_id;
	__u16 pad;
};

/* ---- Stale flows (failover hygiene) -----------------------------------------------------------
 */

#define UPLINKD_MAX_TCP_SEEN UPLINKD_MAX_FLOWS /* LRU, like flows */

#define UPLINKD_MAP_TCP_SEEN "tcp_seen"
#define UPLINKD_MAP_FLOW_COUNTERS "flow_counters"

/* tcp_seen: what LAN egress last sent toward the LAN client of a TCP flow that has an uplink
 * (flows entry with uplink_id != 0), keyed by that flow's struct flow_key (client = saddr). It is
 * what the daemon needs to reset an idle client's socket at failover without waiting for the
 * client to send: the client's RCV.NXT and how to reach it. */
struct tcp_seen {
	__u64 last_seen_ns;
	__u32 next_seq; /* host order: seq + payload (+1 for SYN, +1 for FIN) of the last segment */
	__u32 ifindex;	/* LAN device it left by */
	__u8 client_mac[6]; /* its destination MAC; zero on a device without link-layer header */
	__u8 router_mac[6]; /* its source MAC */
	__u8 l3_only;	    /* 1: the device has no link-layer header */
	__u8 pad[3];
};

/* flow_counters[0]: per-CPU counters of the classifier's stale-flow handling (the daemon sums CPUs
 * and adds its own: proactive resets, expiry sweeps). */
struct flow_counters {
	__u64 created;	       /* flows decided (first packet, or again after stale/idle) */
	__u64 stale_tcp_reset; /* stale TCP packets answered with a RST to the client and dropped */
	__u64 stale_tcp_refused; /* stale TCP packets not TCP-valid for a RST (no ACK, RST,
				    options...) */
	__u64 reclassified;	 /* stale flows (uplink down or gone since) decided again */
	__u64 idle_reclassified; /* flows idle beyond their timeout decided again */
	__u64 pad[3];
};

/* ---- Fragmented datagrams (LAN classifier) ----------------------------------------------------
 */

/* Only a datagram's first fragment carries its ports. lan_ingress decides that fragment by the full
 * 5-tuple and files the decision here under the datagram's identity, so its later fragments get the
 * same mark. An entry is needed only between a datagram's first and last fragment (milliseconds):
 * 4096 datagrams in flight at once is ample for a LAN gateway (a full map just evicts the oldest,
 * long since complete), and at some 120 bytes an entry with the kernel's own share the preallocated
 * map stays under half a megabyte. Not pinned: each lan_ingress object keeps its own (a
 * datagram's fragments come in by one device), the daemon never reads it, and losing it on a
 * restart costs only the fragments in flight (they fall back to the portless key). */
#define UPLINKD_MAX_FRAGMENTS 4096

#define UPLINKD_MAP_FRAGMENTS "fragments"

/* fragments: a datagram as its fragments name it (RFC 791 / RFC 8200 reassembly identity). */
struct frag_key {
	__u8 saddr[16]; /* IPv4 in the first 4 bytes, the rest zero */
	__u8 daddr[16];
	__u32 id;    /* host order: IPv4's 16-bit identification, or IPv6's 32-bit one */
	__u8 proto;  /* IPPROTO_* of the datagram (IPv6: the fragment header's next header) */
	__u8 family; /* 4 or 6 */
	__u16 pad;   /* 0 */
};

/* fragments: the mark the datagram's first fragment left with. */
struct frag_value {
	__u64 first_seen_ns; /* bpf_ktime_get_ns of the first fragment */
	__u32 mark;	 /* the flow's mwan3 mark bits (under mmx_mask); 0 leaves the mark alone */
	__u16 uplink_id; /* 0 when the mark is not an uplink's */
	__u16 pad;	 /* 0 */
};

/* ---- WireGuard endpoint steering (tc egress on uplinks) ----------------------------------------
 */

#define UPLINKD_MAX_WG_ENDPOINTS 1024

#define UPLINKD_MAP_WG_ENDPOINTS "wg_endpoints"
#define UPLINKD_MAP_WG_COUNTERS "wg_counters"
#define UPLINKD_MAP_UPLINK_EGRESS "uplink_egress"

/* wg_endpoints: a WireGuard peer endpoint (hash map), written by the daemon. */
struct wg_endpoint_key {
	__u8 addr[16]; /* IPv4 in the first 4 bytes, the rest zero */
	__u16 port;    /* network order */
	__u8 family;   /* 4 or 6 */
	__u8 pad;
};

struct wg_endpoint_value {
	__u32 policy_id; /* the policy whose active uplink the endpoint follows (per-family slot) */
	__u32 endpoint_id; /* index into wg_counters, < UPLINKD_MAX_WG_ENDPOINTS */
};

/* wg_counters[endpoint_id]: per-CPU. */
struct wg_counters {
	__u64 steered_packets; /* rewritten to the active uplink and redirected */
	__u64 steered_bytes;
	__u64 passed_packets; /* already leaving by the active uplink, or none online */
	__u64 failed_packets; /* rewrite or redirect failed; left alone */
};

/* uplink_egress[id]: how to send by uplink `id` (array map), written by the daemon while the
 * uplink's device is up. A family whose has_* bit is clear cannot be steered to this uplink. */
#define UPLINK_EGRESS_HAS_V4 (1U << 0)
#define UPLINK_EGRESS_HAS_V6 (1U << 1)
#define UPLINK_EGRESS_HAS_GW4 (1U << 2) /* gw4 set: redirect through it; else to the destination   \
					 */
#define UPLINK_EGRESS_HAS_GW6 (1U << 3)

struct uplink_egress {
	__u32 ifindex;
	__u32 flags;  /* UPLINK_EGRESS_* */
	__u8 src4[4]; /* the uplink's IPv4 source address */
	__u8 gw4[4];  /* its IPv4 gateway */
	__u8 src6[16];
	__u8 gw6[16];
};

/* ---- TCP MSS clamping (tc ingress and egress on WireGuard devices) ----------------------------
 */

/* A tunnel moved to an uplink with a smaller path MTU blackholes full-size segments. The daemon
 * computes per WireGuard device the MSS that fits the active uplink's path MTU; wg_mss rewrites the
 * MSS option of SYN and SYN-ACK segments through that device down to it (never up, never added).
 * One entry per WireGuard device; 64 is far more tunnels than a router runs. */
#define UPLINKD_MAX_MSS_CLAMP 64

#define UPLINKD_MAP_MSS_CLAMP "mss_clamp"
#define UPLINKD_MAP_MSS_COUNTERS "mss_counters"

/* mss_clamp[ifindex]: the clamp of one device (hash map, key __u32 ifindex), written by the daemon.
 * No entry: the device's packets pass untouched at the cost of one lookup. */
struct mss_clamp_value {
	__u16 mss4;  /* clamp for IPv4 inner packets, host order; 0 = leave IPv4 alone */
	__u16 mss6;  /* same for IPv6 */
	__u32 flags; /* reserved, 0 */
};

/* mss_counters[0]: per-CPU totals over every device (per-CPU array, one entry; the daemon sums
 * CPUs). Per device would need a per-CPU hash the daemon must clean up; the totals are what a
 * person checks ("is clamping happening at all?"). */
struct mss_clamp_counters {
	__u64 clamped;	/* SYN / SYN-ACK segments whose MSS option was lowered */
	__u64 seen_syn; /* TCP segments with SYN set on a device that has an mss_clamp entry */
};

#define UPLINKD_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#ifdef __cplusplus
#undef UPLINKD_STATIC_ASSERT
#define UPLINKD_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#endif

UPLINKD_STATIC_ASSERT(sizeof(struct daemon_state) == 24, "daemon_state layout");
UPLINKD_STATIC_ASSERT(sizeof(struct uplink_record) == 32, "uplink_record layout");
UPLINKD_STATIC_ASSERT(sizeof(struct probe_key) == 24, "probe_key layout");
UPLINKD_STATIC_ASSERT(sizeof(struct probe_value) == 16, "probe_value layout");
UPLINKD_STATIC_ASSERT(sizeof(struct probe_reply_event) == 48, "probe_reply_event layout");
UPLINKD_STATIC_ASSERT(sizeof(struct uplink_counters) == 48, "uplink_counters layout");
UPLINKD_STATIC_ASSERT(sizeof(struct icmp_limiter_state) == 8, "icmp_limiter_state layout");
UPLINKD_STATIC_ASSERT(sizeof(struct probe_reply_meta) == 8, "probe_reply_meta layout");
UPLINKD_STATIC_ASSERT(sizeof(struct lpm_key) == 20, "lpm_key layout");
UPLINKD_STATIC_ASSERT(sizeof(struct classifier_cfg) == 32, "classifier_cfg layout");
UPLINKD_STATIC_ASSERT(sizeof(struct addr_match) == 20, "addr_match layout");
UPLINKD_STATIC_ASSERT(sizeof(struct port_range) == 4, "port_range layout");
UPLINKD_STATIC_ASSERT(sizeof(struct rule_entry) == 404, "rule_entry layout");
UPLINKD_STATIC_ASSERT(sizeof(struct rule_counter) == 16, "rule_counter layout");
UPLINKD_STATIC_ASSERT(sizeof(struct policy_entry) == 168, "policy_entry layout");
UPLINKD_STATIC_ASSERT(sizeof(struct flow_key) == 40, "flow_key layout");
UPLINKD_STATIC_ASSERT(sizeof(struct flow_value) == 24, "flow_value layout");
UPLINKD_STATIC_ASSERT(sizeof(struct sticky_key) == 24, "sticky_key layout");
UPLINKD_STATIC_ASSERT(sizeof(struct sticky_value) == 24, "sticky_value layout");
UPLINKD_STATIC_ASSERT(sizeof(struct inbound_key) == 20, "inbound_key layout");
UPLINKD_STATIC_ASSERT(sizeof(struct inbound_value) == 16, "inbound_value layout");
UPLINKD_STATIC_ASSERT(sizeof(struct tcp_seen) == 32, "tcp_seen layout");
UPLINKD_STATIC_ASSERT(sizeof(struct flow_counters) == 64, "flow_counters layout");
UPLINKD_STATIC_ASSERT(sizeof(struct frag_key) == 40, "frag_key layout");
UPLINKD_STATIC_ASSERT(sizeof(struct frag_value) == 16, "frag_value layout");
UPLINKD_STATIC_ASSERT(sizeof(struct wg_endpoint_key) == 20, "wg_endpoint_key layout");
UPLINKD_STATIC_ASSERT(sizeof(struct wg_endpoint_value) == 8, "wg_endpoint_value layout");
UPLINKD_STATIC_ASSERT(sizeof(struct wg_counters) == 32, "wg_counters layout");
UPLINKD_STATIC_ASSERT(sizeof(struct uplink_egress) == 48, "uplink_egress layout");
UPLINKD_STATIC_ASSERT(sizeof(struct mss_clamp_value) == 8, "mss_clamp_value layout");
UPLINKD_STATIC_ASSERT(sizeof(struct mss_clamp_counters) == 16, "mss_clamp_counters layout");
UPLINKD_STATIC_ASSERT(sizeof(struct rule_tbl_ext) == 6 * 32 + 8 + 2 * 4 * UPLINKD_PORT_SMALL_SLOTS,
		      "rule_tbl_ext layout");

#endif /* UPLINKD_MAPS_H */
