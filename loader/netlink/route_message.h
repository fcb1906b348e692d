// What a batch of rtnetlink notifications says changed: links, addresses, routes, and whether events
// were lost. Pure parsing of the bytes a NETLINK_ROUTE socket received, no kernel access: RouteEvents
// (route_events.h) receives, unit tests and the fuzz target (tests/fuzz/route_events_fuzz.cpp) feed
// bytes. Built for input it cannot trust: any length, any alignment, truncated or garbage messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace uplinkd::netlink {

// A device that appeared or went away.
struct LinkEvent {
  int ifindex = 0;
  std::string name;  // IFLA_IFNAME; empty when the message did not carry it
  bool operator==(const LinkEvent&) const = default;
};

struct RouteEventSummary {
  bool links = false;      // RTM_NEWLINK / RTM_DELLINK of any kind (flags, carrier, bridge ports...)
  bool addresses = false;  // RTM_NEWADDR / RTM_DELADDR
  bool routes = false;     // RTM_NEWROUTE / RTM_DELROUTE of a table entry (not a cached clone)
  // Events were lost (the socket's receive buffer overran, or a message was cut short): nothing above
  // is complete, so whoever keeps state from these events must read it all again by dump.
  bool overrun = false;
  std::vector<LinkEvent> new_links;      // devices that appeared (registered or moved into this netns)
  std::vector<LinkEvent> deleted_links;  // devices that went away (unregistered or moved out)
  std::vector<uint32_t> route_tables;    // tables whose routes changed, sorted, each once
  size_t messages = 0;                   // netlink messages read
  size_t malformed = 0;                  // messages (or trailing bytes) that could not be read whole

  [[nodiscard]] bool changed() const { return links || addresses || routes || overrun; }
  // A device that appeared, then went away, within one batch is listed in both.
  [[nodiscard]] bool link_deleted(int ifindex) const;
  [[nodiscard]] bool link_added(int ifindex) const;
};

// Reads every netlink message in `bytes` (one datagram or several concatenated, as received) into
// `summary`, adding to what it already holds: flags are ORed, lists grow without duplicates. Stops at
// the first message whose header does not fit or whose length is impossible; a message too short for
// its fixed header still counts as a change of its kind. Never throws except std::bad_alloc.
void add_route_messages(std::span<const uint8_t> bytes, RouteEventSummary* summary);

// The same, into a fresh summary.
RouteEventSummary parse_route_messages(std::span<const uint8_t> bytes);

}  // namespace uplinkd::netlink
