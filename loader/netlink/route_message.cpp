// rtnetlink notifications to a RouteEventSummary. Every read goes through memcpy at a checked offset:
// the bytes may come from a fuzzer at any alignment, so no header is ever dereferenced in place. The
// checks are NLMSG_OK's and RTA_OK's, written as offsets so that no length can wrap around.
#include "netlink/route_message.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace uplinkd::netlink {
namespace {

// The kernel announces a device that was just registered (created, or moved into this namespace) with
// ifi_change = ~0U (rtnl_configure_link, register_netdevice, dev_change_net_namespace); any later change
// of the same device carries only the flags that changed.
constexpr uint32_t kChangeOfNewDevice = ~0U;

size_t align4(size_t length) { return (length + 3) & ~size_t{3}; }

template <typename T>
bool read_at(std::span<const uint8_t> bytes, size_t offset, T* out) {
  if (offset > bytes.size() || bytes.size() - offset < sizeof(T)) {
    return false;
  }
  std::memcpy(out, bytes.data() + offset, sizeof(T));
  return true;
}

// Calls visit(type, payload) for each whole attribute (RTA_OK) in `attrs`. Returns false when bytes
// are left that do not form a whole attribute.
template <typename Visit>
bool for_each_attribute(std::span<const uint8_t> attrs, const Visit& visit) {
  size_t offset = 0;
  while (offset < attrs.size()) {
    rtattr header{};
    if (!read_at(attrs, offset, &header) || header.rta_len < sizeof(rtattr) ||
        header.rta_len > attrs.size() - offset) {
      return false;
    }
    visit(static_cast<uint16_t>(header.rta_type & NLA_TYPE_MASK),
          attrs.subspan(offset + sizeof(rtattr), header.rta_len - sizeof(rtattr)));
    const size_t step = align4(header.rta_len);
    if (step >= attrs.size() - offset) {
      break;  // the last attribute, with or without its padding
    }
    offset += step;
  }
  return true;
}

// The attributes after a message's fixed header `Fixed` (ifinfomsg, rtmsg...), as IFLA_RTA/RTM_RTA
// find them; empty when the payload ends there.
template <typename Fixed>
std::span<const uint8_t> attributes_after(std::span<const uint8_t> payload) {
  const size_t start = align4(sizeof(Fixed));
  return start >= payload.size() ? std::span<const uint8_t>() : payload.subspan(start);
}

// A device name from IFLA_IFNAME: NUL-terminated within the attribute and at most IFNAMSIZ - 1 long.
std::string device_name(std::span<const uint8_t> value) {
  const std::span<const uint8_t> room = value.first(std::min(value.size(), size_t{IFNAMSIZ}));
  const auto end = std::find(room.begin(), room.end(), uint8_t{0});
  if (end == room.end()) {
    return {};  // no terminator where a device name must have one
  }
  return std::string(room.begin(), end);
}

void remember_link(std::vector<LinkEvent>* list, const LinkEvent& event) {
  auto known = std::find_if(list->begin(), list->end(),
                            [&](const LinkEvent& l) { return l.ifindex == event.ifindex; });
  if (known == list->end()) {
    list->push_back(event);
  } else if (known->name.empty()) {
    known->name = event.name;
  }
}

void read_link(uint16_t type, std::span<const uint8_t> payload, RouteEventSummary* summary) {
  summary->links = true;
  ifinfomsg info{};
  if (!read_at(payload, 0, &info)) {
    ++summary->malformed;
    return;
  }
  // Other families announce something else under the same types: AF_BRIDGE a port joining or leaving
  // a bridge (RTM_DELLINK while the device lives on).
  if (info.ifi_family != AF_UNSPEC) {
    return;
  }
  LinkEvent event{info.ifi_index, {}};
  const bool whole = for_each_attribute(attributes_after<ifinfomsg>(payload),
                                        [&](uint16_t attr, std::span<const uint8_t> value) {
                                          if (attr == IFLA_IFNAME) event.name = device_name(value);
                                        });
  if (!whole || event.ifindex <= 0) {
    ++summary->malformed;
  }
  if (event.ifindex <= 0) {
    return;
  }
  if (type == RTM_DELLINK) {
    remember_link(&summary->deleted_links, event);
  } else if (info.ifi_change == kChangeOfNewDevice) {
    remember_link(&summary->new_links, event);
  }
}

void read_address(std::span<const uint8_t> payload, RouteEventSummary* summary) {
  summary->addresses = true;
  if (payload.size() < sizeof(ifaddrmsg)) {
    ++summary->malformed;
  }
}

void read_route(std::span<const uint8_t> payload, RouteEventSummary* summary) {
  rtmsg route{};
  if (!read_at(payload, 0, &route)) {
    summary->routes = true;  // a route changed, in a table it does not say
    ++summary->malformed;
    return;
  }
  if ((route.rtm_flags & RTM_F_CLONED) != 0) {
    return;  // a cached route (PMTU, redirect), not a table entry
  }
  summary->routes = true;
  uint32_t table = route.rtm_table;
  const bool whole = for_each_attribute(attributes_after<rtmsg>(payload),
                                        [&](uint16_t attr, std::span<const uint8_t> value) {
                                          // Tables past 255 are only in RTA_TABLE (rtm_table says 252).
                                          if (attr == RTA_TABLE && value.size() >= sizeof(uint32_t)) {
                                            std::memcpy(&table, value.data(), sizeof table);
                                          }
                                        });
  if (!whole) {
    ++summary->malformed;
  }
  auto at = std::lower_bound(summary->route_tables.begin(), summary->route_tables.end(), table);
  if (at == summary->route_tables.end() || *at != table) {
    summary->route_tables.insert(at, table);
  }
}

}  // namespace

bool RouteEventSummary::link_deleted(int ifindex) const {
  return std::any_of(deleted_links.begin(), deleted_links.end(),
                     [&](const LinkEvent& l) { return l.ifindex == ifindex; });
}

bool RouteEventSummary::link_added(int ifindex) const {
  return std::any_of(new_links.begin(), new_links.end(),
                     [&](const LinkEvent& l) { return l.ifindex == ifindex; });
}

void add_route_messages(std::span<const uint8_t> bytes, RouteEventSummary* summary) {
  size_t offset = 0;
  while (offset < bytes.size()) {
    nlmsghdr header{};
    // NLMSG_OK: the header fits, and the length it claims is at least a header and within the bytes.
    if (!read_at(bytes, offset, &header) || header.nlmsg_len < NLMSG_HDRLEN ||
        header.nlmsg_len > bytes.size() - offset) {
      ++summary->malformed;
      return;
    }
    ++summary->messages;
    const std::span<const uint8_t> payload =
        bytes.subspan(offset + NLMSG_HDRLEN, header.nlmsg_len - NLMSG_HDRLEN);
    switch (header.nlmsg_type) {
      case RTM_NEWLINK:
      case RTM_DELLINK:
        read_link(header.nlmsg_type, payload, summary);
        break;
      case RTM_NEWADDR:
      case RTM_DELADDR:
        read_address(payload, summary);
        break;
      case RTM_NEWROUTE:
      case RTM_DELROUTE:
        read_route(payload, summary);
        break;
      case NLMSG_OVERRUN:
        summary->overrun = true;
        break;
      default:
        break;  // NLMSG_NOOP, NLMSG_DONE, NLMSG_ERROR, groups this reader does not follow
    }
    const size_t step = align4(header.nlmsg_len);  // NLMSG_NEXT
    if (step >= bytes.size() - offset) {
      return;  // the last message, with or without its padding
    }
    offset += step;
  }
}

RouteEventSummary parse_route_messages(std::span<const uint8_t> bytes) {
  RouteEventSummary summary;
  add_route_messages(bytes, &summary);
  return summary;
}

}  // namespace uplinkd::netlink
