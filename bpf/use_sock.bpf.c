// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * `uplinkctl use <iface> <command>`: every socket the command (and its children) creates gets the
 * uplink's mwan3 mark and is bound to its device, as mwan3's LD_PRELOAD wrapper does with SO_MARK
 * and SO_BINDTODEVICE, but also for static binaries and programs that set their own options later.
 * Attached as cgroup/sock_create to a cgroup made for that one command. mark and bound_dev_if have
 * been writable in this hook long before the 5.15 floor.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Set by uplinkctl before load (skeleton rodata). */
const volatile __u32 use_mark = 0;
const volatile __u32 use_ifindex = 0;

SEC("cgroup/sock_create")
int use_sock(struct bpf_sock *sk)
{
	sk->mark = use_mark;
	sk->bound_dev_if = use_ifindex;
	return 1; /* allow the socket */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
