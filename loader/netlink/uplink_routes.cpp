// Table N's default route and the fwmark rule of one uplink, through libnl-route-3. Requests report
// the kernel's own errno (see nl_util.h).
#include "netlink/uplink_routes.h"

#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "lifecycle/teardown.h"
#include "netlink/nl_util.h"

namespace uplinkd::netlink {
namespace {

// Routes uplinkd writes say so in their protocol field; `static` keeps `ip route` readable.
constexpr uint8_t kRouteProtocol = RTPROT_STATIC;

AddrPtr to_nl_addr(const IpAddress& address) {
  return AddrPtr(nl_addr_build(address.family, address.bytes.data(), address.family == AF_INET ? 4 : 16));
}

AddrPtr any_address(int family) {
  IpAddress zero;
  zero.family = family;
  AddrPtr addr = to_nl_addr(zero);
  if (addr) {
    nl_addr_set_prefixlen(addr.get(), 0);
  }
  return addr;
}

std::optional<IpAddress> from_nl_addr(nl_addr* addr, int family) {
  if (addr == nullptr || nl_addr_get_family(addr) != family ||
      nl_addr_get_len(addr) != address_size(family)) {
    return std::nullopt;
  }
  IpAddress result;
  result.family = family;
  std::memcpy(result.bytes.data(), nl_addr_get_binary_addr(addr), address_size(family));
  return result;
}

// The default route of `table` through ifindex (via gateway, or on-link without one), as both
// install and removal describe it: removal gives every attribute so that the kernel deletes
// only this route, not another default route that replaced ours meanwhile.
RoutePtr default_route(uint32_t table, int family, int ifindex, const std::optional<IpAddress>& gateway) {
  RoutePtr route(rtnl_route_alloc());
  AddrPtr destination = any_address(family);
  rtnl_nexthop* nexthop = rtnl_route_nh_alloc();
  if (!route || !destination || nexthop == nullptr) {
    if (nexthop != nullptr) {
      rtnl_route_nh_free(nexthop);
    }
    return nullptr;
  }
  rtnl_route_set_family(route.get(), static_cast<uint8_t>(family));
  rtnl_route_set_table(route.get(), table);
  rtnl_route_set_protocol(route.get(), kRouteProtocol);
  rtnl_route_set_type(route.get(), RTN_UNICAST);
  rtnl_route_set_scope(route.get(), gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK);
  rtnl_route_set_dst(route.get(), destination.get());
  rtnl_route_nh_set_ifindex(nexthop, ifindex);
  if (gateway) {
    AddrPtr via = to_nl_addr(*gateway);
    if (!via) {
      rtnl_route_nh_free(nexthop);
      return nullptr;
    }
    rtnl_route_nh_set_gateway(nexthop, via.get());
  }
  rtnl_route_add_nexthop(route.get(), nexthop);  // the route owns the nexthop from here
  return route;
}

RulePtr fwmark_rule(int family, uint32_t table, uint32_t mark, uint32_t mask, uint32_t pref) {
  RulePtr rule(rtnl_rule_alloc());
  if (!rule) {
    return nullptr;
  }
  rtnl_rule_set_family(rule.get(), family);
  rtnl_rule_set_prio(rule.get(), pref);
  rtnl_rule_set_mark(rule.get(), mark);
  rtnl_rule_set_mask(rule.get(), mask);
  rtnl_rule_set_table(rule.get(), table);
  rtnl_rule_set_action(rule.get(), FR_ACT_TO_TBL);
  return rule;
}

int add_route(nl_sock* sock, rtnl_route* route) {
  // NLM_F_REPLACE: the table belongs to this uplink; an older default route in it (a previous
  // gateway) is swapped out in one step, so the table is never empty in between.
  nl_msg* raw = nullptr;
  const int built = rtnl_route_build_add_request(route, NLM_F_REPLACE, &raw);
  return send_built(sock, built, raw);
}

int delete_route(nl_sock* sock, rtnl_route* route) {
  nl_msg* raw = nullptr;
  const int built = rtnl_route_build_del_request(route, 0, &raw);
  return send_built(sock, built, raw);
}

bool device_exists(int ifindex) {
  char name[IF_NAMESIZE] = {};
  return ifindex > 0 && if_indextoname(static_cast<unsigned int>(ifindex), name) != nullptr;
}

// Administratively up: a device that is down has no routes through it, and none can be added.
bool device_up(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (ifindex <= 0 || if_indextoname(static_cast<unsigned int>(ifindex), name) == nullptr) {
    return false;
  }
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return true;  // cannot tell: try, and let the kernel's answer say
  }
  ifreq request{};
  std::memcpy(request.ifr_name, name, sizeof name);
  const bool up = ioctl(fd, SIOCGIFFLAGS, &request) != 0 || (request.ifr_flags & IFF_UP) != 0;
  close(fd);
  return up;
}

std::string device_name(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (if_indextoname(static_cast<unsigned int>(ifindex), name) != nullptr) {
    return name;
  }
  return "ifindex " + std::to_string(ifindex);
}

std::string hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%x", value);
  return text;
}

const char* family_name(int family) { return family == AF_INET ? "IPv4" : "IPv6"; }

std::string describe_route(int family, uint32_t table, int ifindex, const std::optional<IpAddress>& gateway) {
  std::string via = gateway ? " via " + gateway->str() : "";
  return std::string(family_name(family)) + " default route" + via + " dev " + device_name(ifindex) +
         " to table " + std::to_string(table);
}

std::string describe_rule(int family, uint32_t table, uint32_t mark, uint32_t mask, uint32_t pref) {
  return std::string(family_name(family)) + " rule pref " + std::to_string(pref) + " fwmark " + hex(mark) +
         "/" + hex(mask) + " lookup " + std::to_string(table);
}

// ---- reading the main table's default route ------------------------------------------------

struct GatewaySearch {
  int ifindex = 0;
  int family = 0;
  std::optional<IpAddress> gateway;
  uint32_t metric = 0;
};

bool is_main_default_route(rtnl_route* route, int family) {
  nl_addr* destination = rtnl_route_get_dst(route);
  return rtnl_route_get_family(route) == family && rtnl_route_get_table(route) == RT_TABLE_MAIN &&
         rtnl_route_get_type(route) == RTN_UNICAST && destination != nullptr &&
         nl_addr_get_prefixlen(destination) == 0;
}

// Keeps the gateway of the lowest-metric default route that leaves through the wanted device;
// a multipath default route counts through its nexthop on that device.
int consider_route(nl_msg* message, void* context) {
  auto* search = static_cast<GatewaySearch*>(context);
  rtnl_route* parsed = nullptr;
  if (rtnl_route_parse(nlmsg_hdr(message), &parsed) < 0) {
    return NL_OK;
  }
  RoutePtr route(parsed);
  if (!is_main_default_route(route.get(), search->family)) {
    return NL_OK;
  }
  uint32_t metric = rtnl_route_get_priority(route.get());
  if (search->gateway && metric >= search->metric) {
    return NL_OK;
  }
  for (int i = 0; i < rtnl_route_get_nnexthops(route.get()); ++i) {
    rtnl_nexthop* nexthop = rtnl_route_nexthop_n(route.get(), i);
    if (rtnl_route_nh_get_ifindex(nexthop) != search->ifindex) {
      continue;
    }
    std::optional<IpAddress> gateway = from_nl_addr(rtnl_route_nh_get_gateway(nexthop), search->family);
    if (!gateway) {
      continue;
    }
    search->gateway = gateway;
    search->metric = metric;
    break;
  }
  return NL_OK;
}

// Asks for the main table only: with strict checking the kernel filters the dump by the table
// in the request header, so a router holding a full BGP table in another table is not walked.
// Kernels without strict checking send everything; consider_route filters again.
int dump_main_routes(nl_sock* sock, int family, GatewaySearch* search) {
  int strict = 1;
  setsockopt(nl_socket_get_fd(sock), SOL_NETLINK, NETLINK_GET_STRICT_CHK, &strict, sizeof strict);
  rtmsg request{};
  request.rtm_family = static_cast<unsigned char>(family);
  request.rtm_table = RT_TABLE_MAIN;
  int err = nl_send_simple(sock, RTM_GETROUTE, NLM_F_DUMP, &request, sizeof request);
  if (err < 0) {
    return err;
  }
  nl_socket_modify_cb(sock, NL_CB_VALID, NL_CB_CUSTOM, consider_route, search);
  return nl_recvmsgs_default(sock);
}

// ---- reading back an uplink table's default route -------------------------------------------

struct InstalledSearch {
  uint32_t table = 0;
  int family = 0;
  int ifindex = 0;
  std::optional<IpAddress> gateway;
  bool found = false;
};

// The default route install() adds: in the table, one nexthop through the device, via the gateway (or
// none), whatever its protocol and metric (a person may have put the same route there).
int match_installed_route(nl_msg* message, void* context) {
  auto* search = static_cast<InstalledSearch*>(context);
  rtnl_route* parsed = nullptr;
  if (rtnl_route_parse(nlmsg_hdr(message), &parsed) < 0) {
    return NL_OK;
  }
  RoutePtr route(parsed);
  nl_addr* destination = rtnl_route_get_dst(route.get());
  if (rtnl_route_get_family(route.get()) != search->family ||
      rtnl_route_get_table(route.get()) != search->table || rtnl_route_get_type(route.get()) != RTN_UNICAST ||
      (destination != nullptr && nl_addr_get_prefixlen(destination) != 0) ||
      rtnl_route_get_nnexthops(route.get()) != 1) {
    return NL_OK;
  }
  rtnl_nexthop* nexthop = rtnl_route_nexthop_n(route.get(), 0);
  if (rtnl_route_nh_get_ifindex(nexthop) == search->ifindex &&
      from_nl_addr(rtnl_route_nh_get_gateway(nexthop), search->family) == search->gateway) {
    search->found = true;
  }
  return NL_OK;
}

// Whether `search`'s route is in its table now: 0 or a negative errno. A table that does not exist
// (never held a route, or lost its last one) has none.
int find_installed_route(nl_sock* sock, InstalledSearch* search) {
  constexpr int kAttempts = 3;  // a route change during the dump: a fresh dump gives a true picture
  int err = -NLE_DUMP_INTR;
  for (int attempt = 0; attempt < kAttempts && err == -NLE_DUMP_INTR; ++attempt) {
    MessagePtr message = table_route_dump_request(sock, search->family, search->table);
    if (!message) {
      return -ENOMEM;
    }
    search->found = false;
    nl_socket_modify_cb(sock, NL_CB_VALID, NL_CB_CUSTOM, match_installed_route, search);
    err = nl_send_auto(sock, message.get());
    if (err >= 0) {
      err = nl_recvmsgs_default(sock);
    }
    nl_socket_modify_cb(sock, NL_CB_VALID, NL_CB_DEFAULT, nullptr, nullptr);
  }
  if (err == -NLE_DUMP_INTR) {
    return -EINTR;
  }
  // "FIB table does not exist" ends the dump with ENOENT in NLMSG_DONE, which libnl reads as the end.
  return err >= 0 || err == -NLE_OBJ_NOTFOUND ? 0 : -nle_to_errno(-err);
}

}  // namespace

std::optional<IpAddress> find_default_gateway(int ifindex, int family) {
  if (family != AF_INET && family != AF_INET6) {
    return std::nullopt;
  }
  // A route change during the dump makes the kernel flag it inconsistent (NLE_DUMP_INTR);
  // a fresh dump then gives a true picture instead of a "no gateway" that is not so.
  constexpr int kAttempts = 3;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    SocketPtr sock = connect_route_socket();
    if (!sock) {
      return std::nullopt;
    }
    GatewaySearch search{ifindex, family, std::nullopt};
    int err = dump_main_routes(sock.get(), family, &search);
    if (err >= 0) {
      return search.gateway;
    }
    if (err != -NLE_DUMP_INTR) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

UplinkRoutes::UplinkRoutes() : sock_(connect_route_socket().release()) {}

UplinkRoutes::~UplinkRoutes() {
  if (!lifecycle::keep_kernel_state()) remove_all();
  if (sock_ != nullptr) {
    nl_socket_free(sock_);
  }
}

int UplinkRoutes::install(uint32_t table, int ifindex, int family, const std::optional<IpAddress>& gateway,
                          uint32_t mark, uint32_t mask, uint32_t rule_pref, std::string* error) {
  auto fail = [&](int err, const std::string& what) {
    if (error != nullptr) {
      *error = what + ": " + errno_text(err);
    }
    return err;
  };
  std::string route_text = describe_route(family, table, ifindex, gateway);
  if (family != AF_INET && family != AF_INET6) {
    return fail(-EAFNOSUPPORT, "adding " + route_text);
  }
  if (gateway && gateway->family != family) {
    return fail(-EINVAL, "adding " + route_text + " (gateway of the other family)");
  }
  if (sock_ == nullptr) {
    return fail(-ENOTCONN, "adding " + route_text + " (no rtnetlink socket)");
  }
  // Checked here because the kernel, asked for a gateway route through a missing device,
  // answers "Network is unreachable", which points the reader at the wrong thing.
  if (!device_exists(ifindex)) {
    return fail(-ENODEV, "adding " + route_text);
  }

  RoutePtr route = default_route(table, family, ifindex, gateway);
  if (!route) {
    return fail(-ENOMEM, "adding " + route_text);
  }
  int err = add_route(sock_, route.get());
  if (err != 0) {
    return fail(err, "adding " + route_text);
  }
  Installed& record = remember_route(table, family, ifindex, gateway);

  RulePtr rule = fwmark_rule(family, table, mark, mask, rule_pref);
  if (!rule) {
    return fail(-ENOMEM, "adding " + describe_rule(family, table, mark, mask, rule_pref));
  }
  err = add_rule(sock_, rule.get());
  if (err != 0 && err != -EEXIST) {
    return fail(err, "adding " + describe_rule(family, table, mark, mask, rule_pref));
  }
  bool same_rule_as_before =
      record.rule_owned && record.mark == mark && record.mask == mask && record.pref == rule_pref;
  if (same_rule_as_before) {
    return 0;  // ours, whether still there (EEXIST) or re-added just now
  }
  if (record.rule_owned) {
    delete_rule_of(record);  // this table's rule with its old mark/mask/pref
  }
  record.mark = mark;
  record.mask = mask;
  record.pref = rule_pref;
  // EEXIST on a rule we did not add: someone else's identical rule already sends this mark
  // here. It is left alone, now and at removal, unless this start adopts a predecessor's state,
  // which installed exactly this rule.
  record.rule_owned = err == 0 || lifecycle::adopting();
  return 0;
}

UplinkRoutes::Installed& UplinkRoutes::remember_route(uint32_t table, int family, int ifindex,
                                                      const std::optional<IpAddress>& gateway) {
  auto known = std::find_if(installed_.begin(), installed_.end(), [&](const Installed& entry) {
    return entry.table == table && entry.family == family;
  });
  if (known == installed_.end()) {
    installed_.push_back(Installed{table, family, ifindex, gateway, 0, 0, 0});
    return installed_.back();
  }
  // The replaced route is gone from the kernel; this one is what removal must name.
  known->ifindex = ifindex;
  known->gateway = gateway;
  return *known;
}

void UplinkRoutes::delete_rule_of(const Installed& entry) {
  RulePtr rule = fwmark_rule(entry.family, entry.table, entry.mark, entry.mask, entry.pref);
  if (rule) {
    delete_rule(sock_, rule.get());  // failures other than ENOENT cannot be acted on
  }
}

void UplinkRoutes::uninstall(const Installed& entry) {
  if (sock_ == nullptr) {
    return;
  }
  // The rule goes first, so that marked packets never look into a table without its route.
  if (entry.rule_owned) {
    delete_rule_of(entry);
  }
  // ENOENT/ESRCH are expected (the device went away and took the route with it); removal has
  // no caller to report other failures to.
  RoutePtr route = default_route(entry.table, entry.family, entry.ifindex, entry.gateway);
  if (route) {
    delete_route(sock_, route.get());
  }
}

void UplinkRoutes::remove(uint32_t table, int family) {
  auto known = std::find_if(installed_.begin(), installed_.end(), [&](const Installed& entry) {
    return entry.table == table && entry.family == family;
  });
  if (known == installed_.end()) {
    return;
  }
  uninstall(*known);
  installed_.erase(known);
}

void UplinkRoutes::remove_all() {
  for (const Installed& entry : installed_) {
    uninstall(entry);
  }
  installed_.clear();
}

int UplinkRoutes::restore(Installed& entry, int* repaired, std::string* error) {
  auto fail = [&](int err, const std::string& what) {
    if (error != nullptr) {
      *error = what + ": " + errno_text(err);
    }
    return err;
  };
  const std::string route_text = describe_route(entry.family, entry.table, entry.ifindex, entry.gateway);
  InstalledSearch search{entry.table, entry.family, entry.ifindex, entry.gateway};
  int err = find_installed_route(sock_, &search);
  if (err != 0) {
    return fail(err, "reading back the " + route_text);
  }
  if (!search.found) {
    RoutePtr route = default_route(entry.table, entry.family, entry.ifindex, entry.gateway);
    err = route ? add_route(sock_, route.get()) : -ENOMEM;
    if (err != 0) {
      return fail(err, "adding the missing " + route_text);
    }
    ++*repaired;
  }
  if (entry.pref == 0) {
    return 0;  // install() failed before its rule: nothing to restore
  }
  // NLM_F_EXCL: EEXIST says the rule is there, and nothing is written.
  RulePtr rule = fwmark_rule(entry.family, entry.table, entry.mark, entry.mask, entry.pref);
  err = rule ? add_rule(sock_, rule.get()) : -ENOMEM;
  if (err == -EEXIST) {
    return 0;
  }
  if (err != 0) {
    return fail(err, "adding the missing " +
                         describe_rule(entry.family, entry.table, entry.mark, entry.mask, entry.pref));
  }
  entry.rule_owned = true;  // put there by us now, even if it was someone else's before it went
  ++*repaired;
  return 0;
}

int UplinkRoutes::resync(std::string* error, int* repaired) {
  int count = 0;
  int first_error = 0;
  if (sock_ == nullptr) {
    first_error = -ENOTCONN;
    if (error != nullptr) {
      *error = "checking the uplink tables' default routes (no rtnetlink socket): " + errno_text(first_error);
    }
  }
  for (Installed& entry : installed_) {
    if (sock_ == nullptr || !device_up(entry.ifindex)) {
      continue;
    }
    std::string what;
    const int err = restore(entry, &count, &what);
    if (err != 0 && first_error == 0) {
      first_error = err;
      if (error != nullptr) {
        *error = what;
      }
    }
  }
  if (repaired != nullptr) {
    *repaired = count;
  }
  return first_error;
}

}  // namespace uplinkd::netlink
