// mwan3's iif / unreachable / blackhole rules, table copies of main-table routes, and the connected
// networks, through libnl-route-3.
//
// As in uplink_routes.cpp, each request captures the kernel's errno from its NLMSG_ERROR answer, because
// libnl folds several errnos into one NLE_* code. Dumps also read the errno the kernel puts in NLMSG_DONE
// when a dump fails after it started (libnl treats that message as a plain end of dump).
#include "netlink/policy_rules.h"

#include <linux/fib_rules.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <sys/socket.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <unordered_set>

#include "common/log.h"
#include "config/config.h"
#include "lifecycle/teardown.h"
#include "netlink/nl_util.h"

namespace uplinkd::netlink {
namespace {

using Route = PolicyRules::Route;
using Nexthop = PolicyRules::Nexthop;
using Rule = PolicyRules::Rule;
using RuleKind = PolicyRules::RuleKind;

std::string hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%x", value);
  return text;
}

const char* family_name(int family) { return family == AF_INET ? "IPv4" : "IPv6"; }

std::string device_name(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (ifindex > 0 && if_indextoname(static_cast<unsigned int>(ifindex), name) != nullptr) {
    return name;
  }
  return "ifindex " + std::to_string(ifindex);
}

std::string table_name(uint32_t table) { return table == RT_TABLE_MAIN ? "main" : std::to_string(table); }

AddrPtr to_nl_addr(const IpAddress& address, int prefixlen) {
  AddrPtr addr(nl_addr_build(address.family, address.bytes.data(), address_size(address.family)));
  if (addr) {
    nl_addr_set_prefixlen(addr.get(), prefixlen);
  }
  return addr;
}

// An address of `family` from libnl; an absent or empty one (a default route's destination) is all zero.
IpAddress from_nl_addr(nl_addr* addr, int family) {
  IpAddress result;
  result.family = family;
  if (addr != nullptr && nl_addr_get_family(addr) == family &&
      nl_addr_get_len(addr) == address_size(family)) {
    std::memcpy(result.bytes.data(), nl_addr_get_binary_addr(addr), address_size(family));
  }
  return result;
}

std::optional<IpAddress> optional_address(nl_addr* addr, int family) {
  if (addr == nullptr || nl_addr_get_len(addr) != address_size(family)) {
    return std::nullopt;
  }
  return from_nl_addr(addr, family);
}

RoutePrefix destination_of(rtnl_route* route, int family) {
  nl_addr* dst = rtnl_route_get_dst(route);
  return RoutePrefix{from_nl_addr(dst, family),
                     dst != nullptr ? static_cast<int>(nl_addr_get_prefixlen(dst)) : 0};
}

// ---- reading tables ---------------------------------------------------------------------------

struct TableDump {
  int family = 0;
  uint32_t table = 0;
  std::vector<RoutePtr> routes;
  int kernel_errno = 0;  // from NLMSG_ERROR or NLMSG_DONE
};

int collect_route(nl_msg* message, void* context) {
  auto* dump = static_cast<TableDump*>(context);
  rtnl_route* parsed = nullptr;
  if (rtnl_route_parse(nlmsg_hdr(message), &parsed) < 0) {
    return NL_OK;
  }
  RoutePtr route(parsed);
  // Kernels without strict checking send every table; cached (cloned) routes are not table entries.
  if (rtnl_route_get_family(route.get()) == dump->family &&
      rtnl_route_get_table(route.get()) == dump->table &&
      (rtnl_route_get_flags(route.get()) & RTM_F_CLONED) == 0) {
    dump->routes.push_back(std::move(route));
  }
  return NL_OK;
}

// A dump that fails after it started ends with NLMSG_DONE carrying the negative errno; it goes to
// the dump's kernel_errno (Dump is TableDump or AddressDump).
template <typename Dump>
int remember_done_errno(nl_msg* message, void* context) {
  nlmsghdr* header = nlmsg_hdr(message);
  if (nlmsg_datalen(header) >= static_cast<int>(sizeof(int))) {
    int code = 0;
    std::memcpy(&code, nlmsg_data(header), sizeof code);
    if (code < 0) {
      static_cast<Dump*>(context)->kernel_errno = -code;
    }
  }
  return NL_STOP;
}

// Sends a dump request and receives every answer: `collect` gets each message, the dump's
// kernel_errno an error the kernel reported (as an error or in NLMSG_DONE). The socket's callbacks
// are put back afterwards. Returns nl_send_auto's or nl_recvmsgs_default's result.
template <typename Dump>
int run_dump(nl_sock* sock, nl_msg* request, nl_recvmsg_msg_cb_t collect, Dump* dump) {
  nl_socket_modify_err_cb(sock, NL_CB_CUSTOM, remember_kernel_errno, &dump->kernel_errno);
  nl_socket_modify_cb(sock, NL_CB_VALID, NL_CB_CUSTOM, collect, dump);
  nl_socket_modify_cb(sock, NL_CB_FINISH, NL_CB_CUSTOM, remember_done_errno<Dump>, dump);
  int err = nl_send_auto(sock, request);
  if (err >= 0) {
    err = nl_recvmsgs_default(sock);
  }
  nl_socket_modify_cb(sock, NL_CB_VALID, NL_CB_DEFAULT, nullptr, nullptr);
  nl_socket_modify_cb(sock, NL_CB_FINISH, NL_CB_DEFAULT, nullptr, nullptr);
  nl_socket_modify_err_cb(sock, NL_CB_DEFAULT, nullptr, nullptr);
  return err;
}

int dump_table_once(nl_sock* sock, TableDump* dump) {
  MessagePtr message = table_route_dump_request(sock, dump->family, dump->table);
  if (!message) {
    return -ENOMEM;
  }
  dump->routes.clear();
  dump->kernel_errno = 0;
  int err = run_dump(sock, message.get(), collect_route, dump);
  if (dump->kernel_errno == ENOENT) {
    dump->routes.clear();  // "FIB table does not exist": a table that never held a route is empty
    return 0;
  }
  if (dump->kernel_errno != 0) {
    return -dump->kernel_errno;
  }
  if (err == -NLE_DUMP_INTR) {
    return -EINTR;
  }
  return err >= 0 ? 0 : -nle_to_errno(-err);
}

// Every route of `table` and `family`. A route change during the dump makes the kernel flag it
// inconsistent; a fresh dump then gives a true picture.
int dump_table(nl_sock* sock, int family, uint32_t table, std::vector<RoutePtr>* routes) {
  constexpr int kAttempts = 3;
  TableDump dump{family, table, {}, 0};
  int err = -EINTR;
  for (int attempt = 0; attempt < kAttempts && err == -EINTR; ++attempt) {
    err = dump_table_once(sock, &dump);
  }
  if (err == 0) {
    *routes = std::move(dump.routes);
  }
  return err;
}

// ---- reading a device's addresses -------------------------------------------------------------

struct AddressDump {
  int family = 0;
  int ifindex = 0;
  std::vector<IpAddress> addresses;
  int kernel_errno = 0;
};

// An address a packet can carry as its source to the internet: global scope, and not one that failed
// duplicate address detection. Link-local addresses are the link's, not an uplink's.
int collect_address(nl_msg* message, void* context) {
  auto* dump = static_cast<AddressDump*>(context);
  nlmsghdr* header = nlmsg_hdr(message);
  if (header->nlmsg_type != RTM_NEWADDR || nlmsg_datalen(header) < static_cast<int>(sizeof(ifaddrmsg))) {
    return NL_OK;
  }
  const auto* info = static_cast<const ifaddrmsg*>(nlmsg_data(header));
  if (info->ifa_family != dump->family || static_cast<int>(info->ifa_index) != dump->ifindex ||
      info->ifa_scope != RT_SCOPE_UNIVERSE) {
    return NL_OK;
  }
  nlattr* attrs[IFA_MAX + 1] = {};
  if (nlmsg_parse(header, sizeof(ifaddrmsg), attrs, IFA_MAX, nullptr) < 0) {
    return NL_OK;
  }
  uint32_t flags = info->ifa_flags;
  if (attrs[IFA_FLAGS] != nullptr) {
    flags = nla_get_u32(attrs[IFA_FLAGS]);
  }
  // IFA_LOCAL is the device's own address; IFA_ADDRESS is the peer's on a point-to-point link (PPPoE).
  nlattr* local = attrs[IFA_LOCAL] != nullptr ? attrs[IFA_LOCAL] : attrs[IFA_ADDRESS];
  if ((flags & IFA_F_DADFAILED) != 0 || local == nullptr ||
      nla_len(local) != static_cast<int>(address_size(dump->family))) {
    return NL_OK;
  }
  IpAddress address;
  address.family = dump->family;
  std::memcpy(address.bytes.data(), nla_data(local), address_size(dump->family));
  if (std::find(dump->addresses.begin(), dump->addresses.end(), address) == dump->addresses.end()) {
    dump->addresses.push_back(address);
  }
  return NL_OK;
}

// The global addresses of `family` on `ifindex`. The request carries a full ifaddrmsg with the index, as
// strict checking (set on this socket by dump_table_once) requires; older kernels send every address and
// the callback filters.
int read_addresses(nl_sock* sock, int family, int ifindex, std::vector<IpAddress>* out) {
  MessagePtr message(nlmsg_alloc_simple(RTM_GETADDR, NLM_F_DUMP));
  if (!message) {
    return -ENOMEM;
  }
  ifaddrmsg request{};
  request.ifa_family = static_cast<unsigned char>(family);
  request.ifa_index = static_cast<unsigned int>(ifindex);
  if (nlmsg_append(message.get(), &request, sizeof request, NLMSG_ALIGNTO) < 0) {
    return -ENOMEM;
  }
  AddressDump dump{family, ifindex, {}, 0};
  int err = run_dump(sock, message.get(), collect_address, &dump);
  if (dump.kernel_errno != 0) {
    return -dump.kernel_errno;
  }
  if (err < 0) {
    return err == -NLE_DUMP_INTR ? -EINTR : -nle_to_errno(-err);
  }
  *out = std::move(dump.addresses);
  return 0;
}

// ---- routes as the kernel matches them --------------------------------------------------------

constexpr uint32_t kCopiedNexthopFlags = RTNH_F_ONLINK;  // dead/linkdown/offload are the kernel's to set

bool copyable_type(uint8_t type) {
  return type == RTN_UNICAST || type == RTN_BLACKHOLE || type == RTN_UNREACHABLE || type == RTN_PROHIBIT ||
         type == RTN_THROW;
}

// nullopt for routes a copy could not reproduce: source-specific IPv6 routes, other route types.
std::optional<Route> route_from_nl(rtnl_route* nl, int family) {
  nl_addr* source = rtnl_route_get_src(nl);  // (rtnl_route_get_src_len is declared but not exported)
  if ((source != nullptr && nl_addr_get_prefixlen(source) > 0) || !copyable_type(rtnl_route_get_type(nl))) {
    return std::nullopt;
  }
  Route r;
  r.family = family;
  r.dst = destination_of(nl, family);
  r.tos = rtnl_route_get_tos(nl);
  r.priority = rtnl_route_get_priority(nl);
  r.type = rtnl_route_get_type(nl);
  r.scope = rtnl_route_get_scope(nl);
  r.protocol = rtnl_route_get_protocol(nl);
  r.prefsrc = optional_address(rtnl_route_get_pref_src(nl), family);
  const int count = rtnl_route_get_nnexthops(nl);
  for (int i = 0; i < count; ++i) {
    rtnl_nexthop* hop = rtnl_route_nexthop_n(nl, i);
    Nexthop n;
    n.ifindex = rtnl_route_nh_get_ifindex(hop);
    n.gateway = optional_address(rtnl_route_nh_get_gateway(hop), family);
    n.weight = count > 1 ? rtnl_route_nh_get_weight(hop) : 0;
    // A single nexthop's flags travel in the route header.
    uint32_t flags = rtnl_route_nh_get_flags(hop) | (count == 1 ? rtnl_route_get_flags(nl) : 0);
    n.flags = flags & kCopiedNexthopFlags;
    r.nexthops.push_back(n);
  }
  for (int metric = 1; metric <= RTAX_MAX; ++metric) {
    uint32_t value = 0;
    if (rtnl_route_get_metric(nl, metric, &value) == 0) {
      r.metrics.emplace_back(metric, value);
    }
  }
  return r;
}

RoutePtr route_to_nl(const Route& r, uint32_t table) {
  RoutePtr nl(rtnl_route_alloc());
  AddrPtr dst = to_nl_addr(r.dst.address, r.dst.prefixlen);
  if (!nl || !dst) {
    return nullptr;
  }
  rtnl_route_set_family(nl.get(), static_cast<uint8_t>(r.family));
  rtnl_route_set_table(nl.get(), table);
  rtnl_route_set_dst(nl.get(), dst.get());
  rtnl_route_set_tos(nl.get(), r.tos);
  rtnl_route_set_priority(nl.get(), r.priority);
  rtnl_route_set_type(nl.get(), r.type);
  rtnl_route_set_scope(nl.get(), r.scope);
  rtnl_route_set_protocol(nl.get(), r.protocol);
  if (r.prefsrc) {
    AddrPtr src = to_nl_addr(*r.prefsrc, static_cast<int>(address_size(r.family)) * 8);
    if (!src) {
      return nullptr;
    }
    rtnl_route_set_pref_src(nl.get(), src.get());
  }
  for (const auto& [metric, value] : r.metrics) {
    rtnl_route_set_metric(nl.get(), metric, value);
  }
  for (const Nexthop& n : r.nexthops) {
    rtnl_nexthop* hop = rtnl_route_nh_alloc();
    if (hop == nullptr) {
      return nullptr;
    }
    rtnl_route_nh_set_ifindex(hop, n.ifindex);
    if (n.gateway) {
      AddrPtr via = to_nl_addr(*n.gateway, static_cast<int>(address_size(r.family)) * 8);
      if (!via) {
        rtnl_route_nh_free(hop);
        return nullptr;
      }
      rtnl_route_nh_set_gateway(hop, via.get());
    }
    rtnl_route_nh_set_weight(hop, n.weight);
    rtnl_route_nh_set_flags(hop, n.flags);
    rtnl_route_add_nexthop(nl.get(), hop);  // the route owns the nexthop from here
  }
  if (r.nexthops.size() == 1 && r.nexthops[0].flags != 0) {
    rtnl_route_set_flags(nl.get(), r.nexthops[0].flags);
  }
  return nl;
}

const char* type_word(uint8_t type) {
  switch (type) {
    case RTN_BLACKHOLE:
      return "blackhole ";
    case RTN_UNREACHABLE:
      return "unreachable ";
    case RTN_PROHIBIT:
      return "prohibit ";
    case RTN_THROW:
      return "throw ";
    default:
      return "";
  }
}

// "IPv4 route 203.0.113.0/24 via 192.0.2.1 dev wan1 metric 0", in `ip route` order.
std::string describe_route(const Route& r) {
  std::string s = std::string(family_name(r.family)) + " route " + type_word(r.type) + r.dst.str();
  for (const Nexthop& n : r.nexthops) {
    if (n.gateway) {
      s += " via " + n.gateway->str();
    }
    s += " dev " + device_name(n.ifindex);
  }
  return s + " metric " + std::to_string(r.priority);
}

int send_route(nl_sock* sock, const Route& r, uint32_t table, bool add) {
  RoutePtr nl = route_to_nl(r, table);
  if (!nl) {
    return -ENOMEM;
  }
  nl_msg* raw = nullptr;
  // NLM_F_EXCL: a route the kernel counts as the same (destination, tos, metric) that uplinkd did not
  // add is never replaced.
  const int built = add ? rtnl_route_build_add_request(nl.get(), NLM_F_EXCL, &raw)
                        : rtnl_route_build_del_request(nl.get(), 0, &raw);
  return send_built(sock, built, raw);
}

// Routes by what identifies them in a table, for lookups in tables of many thousand routes (a full BGP
// feed in main): finding each wanted route in a list would be quadratic.
struct RouteKeyHash {
  size_t operator()(const PolicyRules::Route& r) const {
    size_t h = std::hash<int>{}(r.family * 131 + r.dst.prefixlen);
    for (uint8_t b : r.dst.address.bytes) h = h * 31 + b;
    return h ^ (std::hash<uint32_t>{}(r.priority) << 1) ^ (static_cast<size_t>(r.tos) << 7);
  }
};
using RouteSet = std::unordered_set<PolicyRules::Route, RouteKeyHash>;

bool contains(const RouteSet& routes, const PolicyRules::Route& r) { return routes.count(r) != 0; }

bool contains(const std::vector<int>& list, int value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

bool is_ipv6_link_local_net(const Route& r) {
  return r.family == AF_INET6 && r.dst.prefixlen == 64 && r.dst.address.bytes[0] == 0xfe &&
         r.dst.address.bytes[1] == 0x80 &&
         std::all_of(r.dst.address.bytes.begin() + 2, r.dst.address.bytes.end(),
                     [](uint8_t b) { return b == 0; });
}

// mwan3rtmon's choice of main-table routes for the table of the uplink on `ifindex`.
bool belongs_in_uplink_table(const Route& r, int ifindex, const std::vector<int>& other_uplinks) {
  if (r.dst.prefixlen == 0) {
    return false;  // the default route is UplinkRoutes' job
  }
  bool through_uplink = false;
  for (const Nexthop& n : r.nexthops) {
    if (contains(other_uplinks, n.ifindex)) {
      return false;
    }
    through_uplink = through_uplink || n.ifindex == ifindex;
  }
  if (through_uplink) {
    return true;
  }
  if (r.type == RTN_UNICAST && r.nexthops.empty()) {
    return false;  // a nexthop-object route (nhid): nothing here to copy it with
  }
  return !is_ipv6_link_local_net(r);  // each device's fe80::/64 stays out of the others' tables
}

// The non-default routes of `table` that a copy can describe.
int read_routes(nl_sock* sock, int family, uint32_t table, std::vector<Route>* out) {
  std::vector<RoutePtr> routes;
  int err = dump_table(sock, family, table, &routes);
  if (err != 0) {
    return err;
  }
  out->clear();
  for (const RoutePtr& nl : routes) {
    std::optional<Route> r = route_from_nl(nl.get(), family);
    if (r && r->dst.prefixlen > 0) {
      out->push_back(std::move(*r));
    }
  }
  return 0;
}

bool is_reserved_table(uint32_t table) {
  return table == RT_TABLE_UNSPEC || table == RT_TABLE_COMPAT || table == RT_TABLE_DEFAULT ||
         table == RT_TABLE_MAIN || table == RT_TABLE_LOCAL;
}

RulePtr build_rule(const Rule& r) {
  RulePtr rule(rtnl_rule_alloc());
  if (!rule) {
    return nullptr;
  }
  rtnl_rule_set_family(rule.get(), r.family);
  rtnl_rule_set_prio(rule.get(), r.pref);
  switch (r.kind) {
    case RuleKind::IifLookup:
      if (rtnl_rule_set_iif(rule.get(), r.iif.c_str()) < 0) {
        return nullptr;
      }
      rtnl_rule_set_table(rule.get(), r.table);
      rtnl_rule_set_action(rule.get(), FR_ACT_TO_TBL);
      break;
    case RuleKind::FwmarkUnreachable:
    case RuleKind::FwmarkBlackhole:
      rtnl_rule_set_mark(rule.get(), r.mark);
      rtnl_rule_set_mask(rule.get(), r.mask);
      rtnl_rule_set_action(rule.get(),
                           r.kind == RuleKind::FwmarkUnreachable ? FR_ACT_UNREACHABLE : FR_ACT_BLACKHOLE);
      break;
    case RuleKind::FromLookup: {
      AddrPtr source = to_nl_addr(r.source, static_cast<int>(address_size(r.family)) * 8);
      if (!source || rtnl_rule_set_src(rule.get(), source.get()) < 0) {
        return nullptr;
      }
      if (r.mask != 0) {  // fwmark 0/mask: only packets without an uplink mark
        rtnl_rule_set_mark(rule.get(), 0);
        rtnl_rule_set_mask(rule.get(), r.mask);
      }
      rtnl_rule_set_table(rule.get(), r.table);
      rtnl_rule_set_action(rule.get(), FR_ACT_TO_TBL);
      break;
    }
  }
  return rule;
}

// "IPv4 rule pref 1001 iif wan1 lookup 1", "IPv4 rule pref 3001 fwmark 0x100/0x3f00 unreachable", as
// `ip rule` words them.
std::string describe_rule(const Rule& r) {
  std::string s = std::string(family_name(r.family)) + " rule pref " + std::to_string(r.pref);
  switch (r.kind) {
    case RuleKind::IifLookup:
      return s + " iif " + r.iif + " lookup " + std::to_string(r.table);
    case RuleKind::FwmarkUnreachable:
      return s + " fwmark " + hex(r.mark) + "/" + hex(r.mask) + " unreachable";
    case RuleKind::FwmarkBlackhole:
      return s + " fwmark " + hex(r.mark) + "/" + hex(r.mask) + " blackhole";
    case RuleKind::FromLookup:
      return s + " from " + r.source.str() + (r.mask != 0 ? " fwmark 0/" + hex(r.mask) : std::string()) +
             " lookup " + std::to_string(r.table);
  }
  return s;
}

// mwan3's ids from mmx_mask (common.sh): mmdefault = 2^bits - 1, blackhole = mmdefault - 2, unreachable =
// mmdefault - 1.
struct GeneralIds {
  uint32_t blackhole = 0;
  uint32_t unreachable = 0;
};

std::optional<GeneralIds> general_ids(uint32_t mmx_mask) {
  const int bits = std::popcount(mmx_mask);
  if (bits < 3) {
    return std::nullopt;
  }
  const uint64_t mmdefault = (uint64_t{1} << bits) - 1;
  return GeneralIds{static_cast<uint32_t>(mmdefault - 2), static_cast<uint32_t>(mmdefault - 1)};
}

// Whether the dumped rules hold `r` (a FromLookup rule) without any fwmark condition.
bool has_unconditional_rule(nl_cache* rules, const Rule& r) {
  AddrPtr source = to_nl_addr(r.source, static_cast<int>(address_size(r.family)) * 8);
  if (!source) {
    return false;
  }
  for (nl_object* o = nl_cache_get_first(rules); o != nullptr; o = nl_cache_get_next(o)) {
    auto* rule = reinterpret_cast<rtnl_rule*>(o);
    nl_addr* src = rtnl_rule_get_src(rule);
    const uint32_t mark = rtnl_rule_get_mark(rule);
    const uint32_t mask = rtnl_rule_get_mask(rule);
    const bool unmarked = (mark == 0 || mark == UINT32_MAX) && (mask == 0 || mask == UINT32_MAX);
    if (rtnl_rule_get_prio(rule) == r.pref && rtnl_rule_get_table(rule) == r.table && unmarked &&
        src != nullptr && nl_addr_cmp(src, source.get()) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

// ---- RoutePrefix ------------------------------------------------------------------------------

std::string RoutePrefix::str() const { return address.str() + "/" + std::to_string(prefixlen); }

bool RoutePrefix::operator<(const RoutePrefix& other) const {
  if (address.family != other.address.family) {
    return address.family < other.address.family;
  }
  if (address.bytes != other.address.bytes) {
    return address.bytes < other.address.bytes;
  }
  return prefixlen < other.prefixlen;
}

int connected_networks(int family, std::vector<RoutePrefix>* networks, std::string* error) {
  auto fail = [&](int err, const std::string& what) {
    if (error != nullptr) {
      *error = what + ": " + errno_text(err);
    }
    return err;
  };
  if (family != AF_INET && family != AF_INET6) {
    return fail(-EAFNOSUPPORT, "reading connected networks of family " + std::to_string(family));
  }
  SocketPtr sock = connect_route_socket();
  if (!sock) {
    return fail(-ENOTCONN,
                std::string("reading the ") + family_name(family) + " main table (no rtnetlink socket)");
  }
  std::vector<RoutePrefix> found;
  for (uint32_t table : {uint32_t{RT_TABLE_MAIN}, uint32_t{RT_TABLE_LOCAL}}) {
    std::vector<RoutePtr> routes;
    int err = dump_table(sock.get(), family, table, &routes);
    if (err != 0) {
      return fail(err, std::string("reading the ") + family_name(family) + " " +
                           (table == RT_TABLE_MAIN ? "main" : "local") + " table");
    }
    for (const RoutePtr& route : routes) {
      RoutePrefix dst = destination_of(route.get(), family);
      if (dst.prefixlen > 0) {
        found.push_back(dst);
      }
    }
  }
  if (family == AF_INET) {
    found.push_back(RoutePrefix{*IpAddress::parse("224.0.0.0"), 3});  // multicast and class E, as mwan3
  }
  std::sort(found.begin(), found.end());
  found.erase(std::unique(found.begin(), found.end()), found.end());
  *networks = std::move(found);
  return 0;
}

// ---- PolicyRules ------------------------------------------------------------------------------

PolicyRules::PolicyRules() : sock_(connect_route_socket().release()) {}

PolicyRules::~PolicyRules() {
  if (!lifecycle::keep_kernel_state()) remove_all();
  if (sock_ != nullptr) {
    nl_socket_free(sock_);
  }
}

int PolicyRules::apply_rules(uint32_t owner, int family, const std::vector<Rule>& wanted,
                             std::string* error) {
  for (const Rule& w : wanted) {
    bool present = std::any_of(rules_.begin(), rules_.end(), [&](const InstalledRule& installed) {
      return installed.owner == owner && installed.rule == w;
    });
    if (present) {
      continue;
    }
    RulePtr rule = build_rule(w);
    int err = rule ? add_rule(sock_, rule.get()) : -ENOMEM;
    if (err != 0 && err != -EEXIST) {
      if (error != nullptr) {
        *error = "adding " + describe_rule(w) + ": " + errno_text(err);
      }
      return err;
    }
    // EEXIST: someone else's identical rule already does this; it stays theirs. When this start
    // adopts a predecessor's state, the rule is the predecessor's, and so ours from now on.
    rules_.push_back(InstalledRule{owner, w, err == 0 || lifecycle::adopting()});
  }
  // The owner's rules that are not wanted any more (another device or mark), removed after the new ones
  // are in place so that traffic never finds neither.
  for (auto it = rules_.begin(); it != rules_.end();) {
    if (it->owner == owner && it->rule.family == family &&
        std::find(wanted.begin(), wanted.end(), it->rule) == wanted.end()) {
      delete_installed(*it);
      it = rules_.erase(it);
    } else {
      ++it;
    }
  }
  return 0;
}

void PolicyRules::delete_installed(const InstalledRule& installed) {
  if (!installed.owned || sock_ == nullptr) {
    return;
  }
  RulePtr rule = build_rule(installed.rule);
  if (rule) {
    delete_rule(sock_, rule.get());  // ENOENT: someone removed it already; nothing else to act on
  }
}

void PolicyRules::remove_rules(uint32_t owner, int family) {
  for (auto it = rules_.begin(); it != rules_.end();) {
    if (it->owner == owner && it->rule.family == family) {
      delete_installed(*it);
      it = rules_.erase(it);
    } else {
      ++it;
    }
  }
}

int PolicyRules::install_uplink(uint32_t id, const std::string& device, int family, uint32_t mark,
                                uint32_t mask, std::string* error) {
  const Rule iif{RuleKind::IifLookup, family, kIifRulePrefBase + id, device, id, 0, 0};
  const Rule unreachable{
      RuleKind::FwmarkUnreachable, family, kUnreachableRulePrefBase + id, "", 0, mark, mask};
  auto fail = [&](int err, const std::string& why) {
    if (error != nullptr) {
      *error = "adding " + describe_rule(iif) + " and " + describe_rule(unreachable) + ": " + why + ": " +
               errno_text(err);
    }
    return err;
  };
  if (family != AF_INET && family != AF_INET6) {
    return fail(-EAFNOSUPPORT, "family " + std::to_string(family));
  }
  // Prefs 1000+id and 3000+id must stay inside their own thousand.
  if (id == 0 || id >= 1000) {
    return fail(-EINVAL, "uplink id " + std::to_string(id) + " is outside 1 to 999");
  }
  if (device.empty() || device.size() >= IF_NAMESIZE) {
    return fail(-EINVAL, "device name '" + device + "' is not 1 to 15 characters");
  }
  if (mark == 0 || (mark & ~mask) != 0) {
    return fail(-EINVAL, "mark " + hex(mark) + " is not a non-zero mark within mask " + hex(mask));
  }
  if (sock_ == nullptr) {
    return fail(-ENOTCONN, "no rtnetlink socket");
  }
  return apply_rules(id, family, {iif, unreachable}, error);
}

void PolicyRules::remove_uplink(uint32_t id, int family) {
  if (id != kGeneralOwner) {
    remove_rules(id, family);
    remove_source_rules(id, family);
  }
}

int PolicyRules::sync_source_rules(uint32_t id, int ifindex, int family, std::string* error,
                                   std::vector<IpAddress>* addresses, uint32_t unmarked_mask) {
  const std::string what = std::string("the ") + (family == AF_INET ? "IPv4" : "IPv6") +
                           " source rules of uplink " + std::to_string(id) + " (device " +
                           device_name(ifindex) + ")";
  auto fail = [&](int err, const std::string& why) {
    if (error != nullptr) {
      *error = "keeping " + what + ": " + why + ": " + errno_text(err);
    }
    return err;
  };
  if (family != AF_INET && family != AF_INET6) {
    return fail(-EAFNOSUPPORT, "family " + std::to_string(family));
  }
  if (id == 0 || id > kMaxSourceRuleId) {
    return fail(-EINVAL, "uplink id " + std::to_string(id) + " is outside 1 to " +
                             std::to_string(kMaxSourceRuleId) + " (pref 1500+id must stay below 2000)");
  }
  if (ifindex <= 0) {
    return fail(-ENODEV, "no device");
  }
  if (sock_ == nullptr) {
    return fail(-ENOTCONN, "no rtnetlink socket");
  }
  std::vector<IpAddress> found;
  int err = read_addresses(sock_, family, ifindex, &found);
  if (err != 0) {
    return fail(err, "reading the device's addresses");
  }
  std::vector<Rule> wanted;
  for (const IpAddress& address : found) {
    Rule r{RuleKind::FromLookup, family, kSourceRulePrefBase + id, "", id, 0, unmarked_mask};
    r.source = address;
    wanted.push_back(r);
  }
  if (addresses != nullptr) {
    *addresses = found;
  }
  err = apply_rules(kSourceOwner | id, family, wanted, error);
  if (err == 0 && unmarked_mask != 0) {
    retire_unconditional_source_rules(id, family, found);
  }
  return err;
}

// The source rules of a daemon that ran without the output table (`from <address> lookup id`, no
// fwmark) at the pref uplinkd keeps for its own: beside the output table they would send the router's
// own packets that a rule marked for another uplink back by their source address's uplink. Looked
// for once per address, after the fwmark form is in place (an address is never without its rule),
// and removed only when found: a delete request treats an absent fwmark as "any", so it must not be
// sent blind or it could take the fwmark form instead. The kernel deletes the first rule that
// matches, and a predecessor's rule precedes ours (equal prefs keep their order of insertion).
void PolicyRules::retire_unconditional_source_rules(uint32_t id, int family,
                                                    const std::vector<IpAddress>& addresses) {
  std::vector<Rule> pending;
  for (const IpAddress& address : addresses) {
    Rule legacy{RuleKind::FromLookup, family, kSourceRulePrefBase + id, "", id, 0, 0};
    legacy.source = address;
    if (std::find(retired_.begin(), retired_.end(), legacy) == retired_.end()) {
      pending.push_back(legacy);
    }
  }
  if (pending.empty()) {
    return;
  }
  // A socket of its own: libnl's cache fill on sock_, whose callbacks the dumps above have set and
  // put back, came back without the rules (netns test). Once per address, so the cost is nothing.
  SocketPtr dump_sock = connect_route_socket();
  nl_cache* cache = nullptr;
  if (!dump_sock || rtnl_rule_alloc_cache(dump_sock.get(), family, &cache) < 0) {
    return;  // looked for again at the next sync
  }
  for (const Rule& legacy : pending) {
    retired_.push_back(legacy);
    if (!has_unconditional_rule(cache, legacy)) {
      continue;
    }
    RulePtr rule = build_rule(legacy);
    if (rule && delete_rule(sock_, rule.get()) == 0) {
      log::notice("removed " + describe_rule(legacy) +
                  ", left by an uplinkd without the output table (the fwmark form replaces it)");
    }
  }
  nl_cache_free(cache);
}

void PolicyRules::remove_source_rules(uint32_t id, int family) {
  if (id != kGeneralOwner) {
    remove_rules(kSourceOwner | id, family);
  }
}

int PolicyRules::install_general(int family, uint32_t mmx_mask, std::string* error) {
  auto fail = [&](int err, const std::string& what) {
    if (error != nullptr) {
      *error = what + ": " + errno_text(err);
    }
    return err;
  };
  if (family != AF_INET && family != AF_INET6) {
    return fail(-EAFNOSUPPORT,
                "adding the blackhole and unreachable rules of family " + std::to_string(family));
  }
  std::optional<GeneralIds> ids = general_ids(mmx_mask);
  if (!ids) {
    return fail(-EINVAL, std::string("adding the ") + family_name(family) +
                             " blackhole and unreachable rules: mmx_mask " + hex(mmx_mask) +
                             " has fewer than 3 bits set");
  }
  if (sock_ == nullptr) {
    return fail(-ENOTCONN, std::string("adding the ") + family_name(family) +
                               " blackhole and unreachable rules (no rtnetlink socket)");
  }
  const Rule blackhole{RuleKind::FwmarkBlackhole,
                       family,
                       kFwmarkRulePrefBase + ids->blackhole,
                       "",
                       0,
                       config::mark_for_id(ids->blackhole, mmx_mask),
                       mmx_mask};
  const Rule unreachable{RuleKind::FwmarkUnreachable,
                         family,
                         kFwmarkRulePrefBase + ids->unreachable,
                         "",
                         0,
                         config::mark_for_id(ids->unreachable, mmx_mask),
                         mmx_mask};
  return apply_rules(kGeneralOwner, family, {blackhole, unreachable}, error);
}

void PolicyRules::remove_general(int family) { remove_rules(kGeneralOwner, family); }

int PolicyRules::sync_table(uint32_t table, int ifindex, int family, const std::vector<int>& other_uplinks,
                            std::string* error, int* added, int* removed) {
  int added_count = 0;
  int removed_count = 0;
  int first_error = 0;
  auto note = [&](int err, const std::string& what) {
    if (first_error == 0) {
      first_error = err;
      if (error != nullptr) {
        *error = what + ": " + errno_text(err);
      }
    }
  };
  auto finish = [&] {
    if (added != nullptr) {
      *added = added_count;
    }
    if (removed != nullptr) {
      *removed = removed_count;
    }
    return first_error;
  };
  const std::string into = " into table " + std::to_string(table) + " (device " + device_name(ifindex) + ")";
  if (family != AF_INET && family != AF_INET6) {
    note(-EAFNOSUPPORT, "copying routes of family " + std::to_string(family) + into);
    return finish();
  }
  if (is_reserved_table(table)) {
    note(-EINVAL, std::string("copying ") + family_name(family) + " routes" + into +
                      ": a system table, not an uplink's");
    return finish();
  }
  if (sock_ == nullptr) {
    note(-ENOTCONN,
         std::string("copying ") + family_name(family) + " routes" + into + " (no rtnetlink socket)");
    return finish();
  }

  std::vector<Route> main_routes;
  int err = read_routes(sock_, family, RT_TABLE_MAIN, &main_routes);
  if (err != 0) {
    note(err, std::string("reading the ") + family_name(family) + " main table to copy it" + into);
    return finish();
  }
  std::vector<Route> wanted;
  for (Route& r : main_routes) {
    if (belongs_in_uplink_table(r, ifindex, other_uplinks)) {
      wanted.push_back(std::move(r));
    }
  }
  std::vector<Route> current_list;
  err = read_routes(sock_, family, table, &current_list);
  if (err != 0) {
    note(err, std::string("reading ") + family_name(family) + " table " + table_name(table));
    return finish();
  }
  const RouteSet current(std::make_move_iterator(current_list.begin()),
                         std::make_move_iterator(current_list.end()));
  const RouteSet wanted_set(wanted.begin(), wanted.end());

  // Copies this object added: keep those still wanted and present; remove the unwanted; forget those
  // already gone (a device that went away takes its routes with it).
  for (auto it = routes_.begin(); it != routes_.end();) {
    if (it->table != table || it->route.family != family) {
      ++it;
      continue;
    }
    const bool present = contains(current, it->route);
    if (present && contains(wanted_set, it->route)) {
      ++it;
      continue;
    }
    if (present) {
      err = send_route(sock_, it->route, table, /*add=*/false);
      if (err != 0 && err != -ENOENT && err != -ESRCH) {
        note(err, "removing " + describe_route(it->route) + " from table " + table_name(table));
        ++it;
        continue;
      }
      ++removed_count;
    }
    it = routes_.erase(it);
  }
  // At an adopting start, the predecessor's copies found in the table become ours (at most once each).
  RouteSet ours;
  if (lifecycle::adopting()) {
    for (const CopiedRoute& c : routes_) {
      if (c.table == table) ours.insert(c.route);
    }
  }
  for (const Route& r : wanted) {
    if (contains(current, r)) {
      // Ours from before, or the same route put there by someone else; a predecessor's copy when this
      // start adopts its state, removed like our own from now on.
      if (lifecycle::adopting() && ours.insert(r).second) routes_.push_back(CopiedRoute{table, r});
      continue;
    }
    err = send_route(sock_, r, table, /*add=*/true);
    if (err == -EEXIST) {
      note(err, "copying " + describe_route(r) + " from table main to table " + table_name(table) +
                    ": table " + table_name(table) + " holds another route to " + r.dst.str() +
                    " with that metric, which uplinkd did not add");
      continue;
    }
    if (err != 0) {
      note(err, "copying " + describe_route(r) + " from table main to table " + table_name(table));
      continue;
    }
    routes_.push_back(CopiedRoute{table, r});
    ++added_count;
  }
  return finish();
}

void PolicyRules::remove_table(uint32_t table, int family) {
  for (auto it = routes_.begin(); it != routes_.end();) {
    if (it->table == table && it->route.family == family) {
      if (sock_ != nullptr) {
        send_route(sock_, it->route, table, /*add=*/false);  // ENOENT: gone with its device already
      }
      it = routes_.erase(it);
    } else {
      ++it;
    }
  }
}

void PolicyRules::remove_all() {
  for (const InstalledRule& installed : rules_) {
    delete_installed(installed);
  }
  rules_.clear();
  for (const CopiedRoute& copy : routes_) {
    if (sock_ != nullptr) {
      send_route(sock_, copy.route, copy.table, /*add=*/false);
    }
  }
  routes_.clear();
}

}  // namespace uplinkd::netlink
