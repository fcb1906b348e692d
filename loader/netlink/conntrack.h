// Conntrack hygiene over ctnetlink (libnl-nf-3): delete a dead uplink's conntrack entries by their
// mark, never the whole table, and delete one entry by its original tuple.
//
// Deleting an entry also takes its flow off a software flow-offload fast path at once (the
// flowtable refuses dying entries), so the flow's next packet goes through the ruleset and the
// routing decision again (DESIGN.md, "Facts the datapath rests on").
//
// Both calls work in the network namespace of the calling thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace uplinkd::netlink {

struct ConntrackDeleteResult {
  size_t examined = 0;  // entries the (kernel-filtered) dumps returned
  size_t matched = 0;   // of those, ct mark & mask == mark & mask (checked again here)
  size_t deleted = 0;   // deleted by this call
  size_t failed = 0;    // the kernel refused a delete with an error other than ENOENT
};

// Deletes every conntrack entry, IPv4 and IPv6, whose ct mark & mask == mark & mask. Entries that
// vanish during the walk (expired, deleted by someone else, or replaced by a new entry with the
// same tuple) are neither deleted nor failures. Throws std::invalid_argument when mask == 0 or
// (mark & mask) == 0, which would match every unmarked flow (a global flush in disguise), and
// std::system_error when ctnetlink cannot be reached or a dump fails.
// Cost (bench/invalidation_bench.cpp): 2.5-3 s of wall time for 100k matching entries on the
// project's busy 2-core VM (0.6 s of it CPU; `conntrack -D` took 4-5 s), and about 80 bytes per
// matching entry while it runs; call it off the event loop.
ConntrackDeleteResult conntrack_delete_by_mark(uint32_t mark, uint32_t mask);

// Deletes the entry (zone 0) whose ORIGINAL tuple is this: family AF_INET (4-byte addresses) or
// AF_INET6 (16-byte addresses), proto IPPROTO_TCP/UDP/UDPLITE/SCTP/DCCP, ports in network order.
// The kernel looks the tuple up in both directions, so an entry whose REPLY tuple this is goes too.
// True when an entry was deleted, false when there was none; throws std::invalid_argument for
// another family or protocol, std::system_error on other kernel errors.
bool conntrack_delete_tuple(int family, uint8_t proto, const uint8_t* src, const uint8_t* dst,
                            uint16_t sport_be, uint16_t dport_be);

}  // namespace uplinkd::netlink
