// The bytes a NETLINK_ROUTE notification socket receives, as RouteEvents reads them:
// netlink::add_route_messages. It reads any bytes at any alignment without reading past them, and what
// it reports holds together: no more messages than headers fit, lists without duplicates, tables
// sorted, names no longer than a device name.
#include <net/if.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "netlink/route_message.h"

namespace {

using uplinkd::netlink::LinkEvent;
using uplinkd::netlink::RouteEventSummary;

bool consistent(const std::vector<LinkEvent>& links) {
  for (size_t i = 0; i < links.size(); ++i) {
    if (links[i].ifindex <= 0 || links[i].name.size() >= IFNAMSIZ) return false;
    for (size_t j = i + 1; j < links.size(); ++j) {
      if (links[i].ifindex == links[j].ifindex) return false;
    }
  }
  return true;
}

// `reads`: how many buffers went into `s`; each may end in one malformed stretch.
void check(const RouteEventSummary& s, size_t size, size_t reads) {
  if (s.messages > size / 16 || s.malformed > s.messages + reads) std::abort();  // 16: a netlink header
  if (!consistent(s.new_links) || !consistent(s.deleted_links)) std::abort();
  if (!std::is_sorted(s.route_tables.begin(), s.route_tables.end()) ||
      std::adjacent_find(s.route_tables.begin(), s.route_tables.end()) != s.route_tables.end()) {
    std::abort();
  }
  if (!s.route_tables.empty() && !s.routes) std::abort();
  if ((!s.new_links.empty() || !s.deleted_links.empty()) && !s.links) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  const RouteEventSummary whole = uplinkd::netlink::parse_route_messages(bytes);
  check(whole, size, 1);
  // The same bytes as two receives into one summary: what the first said stays, lists stay unique.
  RouteEventSummary split = uplinkd::netlink::parse_route_messages(bytes.first(size / 2));
  const RouteEventSummary first = split;
  uplinkd::netlink::add_route_messages(bytes.subspan(size / 2), &split);
  check(split, size, 2);
  if ((first.links && !split.links) || (first.routes && !split.routes) || (first.overrun && !split.overrun) ||
      split.deleted_links.size() < first.deleted_links.size() || split.messages < first.messages) {
    std::abort();
  }
  return 0;
}
