// The daemon's part in the uplinks' devices: watching links, addresses and routes (netlink
// notifications, with a periodic poll as the backstop), bringing an uplink up when its device and
// addresses are there (its table, its rules, XDP and tc attached), and down when the device goes.
// PPPoE devices whose addresses arrive after the device are waited for, not failed
// (device_readiness.h).
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>

#include "common/log.h"
#include "daemon/daemon.h"
#include "daemon/device_readiness.h"
#include "daemon/link_state.h"

namespace uplinkd {
namespace {

constexpr int64_t kDevicePollNs = 250 * 1000000LL;  // link state check; cheap ioctls
// After a failed or waiting bring-up at runtime: the backstop; a link or address notification retries
// sooner (retry_bring_up_soon).
constexpr int64_t kRetryNs = 2 * 1000000000LL;
constexpr int64_t kRouteEventDelayNs = 50 * 1000000LL;  // lets a burst of route notifications settle
constexpr uint32_t kRulePrefBase = 2000;                // mwan3: pref 2000+N fwmark mark(N) lookup N

}  // namespace

// The uplink tables copy the main table's routes and the classifier's connected networks follow
// the addresses: both are brought in step shortly after the kernel says a route, an address or a
// link changed (a burst of notifications is handled once), with the periodic refresh as a safety net.
void Daemon::open_route_events() {
  route_events_ = std::make_unique<netlink::RouteEvents>();
  if (!route_events_->ok()) {
    log::warn("route notifications unavailable (" + route_events_->error() +
              "): routes and connected networks are synced every " +
              std::to_string(kPolicyRefreshNs / 1000000000) + " s only");
    route_events_.reset();
  }
}

void Daemon::drain_route_events(int64_t now) {
  const netlink::RouteEventSummary events = route_events_->drain();
  if (events.overrun) {
    // Notifications were lost: devices, routes and rules are all read again now, not in 50 ms.
    log::info("route notifications overran the socket's buffer: devices, routes and rules read again");
    poll_devices(now, false);
    refresh_routing(now);
    return;
  }
  if (!events.changed()) return;
  next_policy_refresh_ = std::min(next_policy_refresh_, now + kRouteEventDelayNs);
  // The main table's routes too: an Ethernet uplink without `option gateway` waits for the default
  // route DHCP adds there.
  const bool main_routes = std::binary_search(events.route_tables.begin(), events.route_tables.end(),
                                              static_cast<uint32_t>(RT_TABLE_MAIN));
  if (events.links || events.addresses || main_routes) retry_bring_up_soon(now);
}

// A device that appeared, came up or got an address (or a default route) may be what a waiting or
// failed bring-up lacked (a PPPoE session's addresses arrive after its device): the next device poll, shortly
// after the burst of notifications settles, tries again instead of waiting out kRetryNs, which stays the
// backstop for failures no notification announces. A device flapping every second costs one attempt
// per settled burst, never more than one every kRouteEventDelayNs.
void Daemon::retry_bring_up_soon(int64_t now) {
  bool waiting = false;
  for (auto& [id, u] : uplinks_) {
    if (u.device_up || u.admin_down) continue;
    u.retry_at = 0;
    waiting = true;
  }
  if (waiting) next_device_poll_ = std::min(next_device_poll_, now + kRouteEventDelayNs);
}

// The uplink tables and rules put back where the kernel dropped them (a device taken down and up
// between two polls drops its routes in every table), then the policies' view of routes and networks.
void Daemon::refresh_routing(int64_t now) {
  std::string error;
  int repaired = 0;
  if (routes_.resync(&error, &repaired) != 0) log::warn("uplink tables: " + error);
  if (repaired > 0)
    log::notice("uplink tables: " + std::to_string(repaired) + " route(s) or rule(s) put back");
  policy_->refresh(uplink_views());
  next_policy_refresh_ = now + kPolicyRefreshNs;
}

void Daemon::poll_devices(int64_t now, bool at_start) {
  next_device_poll_ = now + kDevicePollNs;
  for (auto& [id, u] : uplinks_) {
    const LinkState link = read_link(u.cfg->device);
    const bool usable = link.ifindex != 0 && link.up;
    if (u.adopted_state && !usable) {
      // The predecessor had it running; its device went down or away while no daemon ran.
      u.adopted_state.reset();
      log::notice("interface " + u.cfg->name + " (" + u.cfg->device + "): device " +
                  (link.ifindex == 0 ? "vanished" : "is down") + " since the previous daemon");
      hooks_.enqueue("ifdown", u.cfg->name, "", false);
      write_record(u);
    }
    if (u.device_up && (!usable || link.ifindex != u.ifindex)) bring_down(u, now, link.ifindex != u.ifindex);
    if (!u.device_up && usable && !u.admin_down && now >= u.retry_at)
      bring_up(u, link.ifindex, now, at_start);
  }
  check_device_mtus(now);
}

void Daemon::bring_up(Uplink& u, int ifindex, int64_t now, bool at_start) {
  const config::InterfaceConfig& cfg = *u.cfg;
  const LinkState link = read_link(cfg.device);
  const int family = cfg.family == config::Family::Ipv6 ? AF_INET6 : AF_INET;
  if (wait_for_addresses(u, link, family, now)) return;
  std::optional<IpAddress> gateway = cfg.gateway;
  if (!gateway) gateway = netlink::find_default_gateway(ifindex, family);
  // At start a failure to attach or route is fatal (nothing half-done stays behind); later it is
  // retried, since the device or its addresses may still be settling.
  auto fail = [&](const std::string& why, bool fatal_at_start) {
    if (at_start && fatal_at_start) throw std::runtime_error(why);
    if (u.last_error != why)
      log::error(why + "; retrying when its device or addresses change, at the latest every " +
                 std::to_string(kRetryNs / 1000000000) + " s");
    u.last_error = why;
    u.retry_at = now + kRetryNs;
  };
  if (!gateway && link.ethernet) {
    // Without a gateway an Ethernet uplink cannot be probed through its own table; DHCP may still
    // be working on it, so wait rather than fail.
    return fail("interface " + cfg.name + " (" + cfg.device +
                    "): no gateway: add `option gateway` to its mwan3 section or a default route via " +
                    cfg.device + " to the main table",
                false);
  }
  const uint32_t mark = config::mark_for_id(cfg.id, config_.globals.mmx_mask);
  std::string error;
  const int installed = routes_.install(cfg.id, ifindex, family, gateway, mark, config_.globals.mmx_mask,
                                        kRulePrefBase + cfg.id, &error);
  if (installed == -ENETUNREACH && gateway && waits_for_addresses(link)) {
    // pppd sets the local address a moment before the peer's: the route via the peer is refused until
    // then, and goes in on the notification of the peer's address.
    const bool has_peer = read_device_addresses(cfg.device, family).peer;
    return wait_for_device(
        u, "cannot reach its gateway " + gateway->str() + " yet" + (has_peer ? "" : " (no peer address)"),
        now);
  }
  if (installed != 0) return fail("interface " + cfg.name + ": " + error, true);
  if (u.attached && u.ifindex != ifindex) release_device(u);
  if (!u.attached) {
    try {
      attach_device(u, ifindex, link.ethernet);
    } catch (const datapath::DatapathError& e) {
      routes_.remove(cfg.id, family);
      return fail("interface " + cfg.name + ": " + e.what(), true);
    }
  }
  u.ifindex = ifindex;
  u.device_up = true;
  u.gateway = gateway;
  u.last_error.clear();
  wireguard_uplink_up(u, link.ethernet);
  log::info("interface " + cfg.name + " (" + cfg.device + "): tracking via " +
            (gateway ? gateway->str() : std::string("the link")) + ", XDP " +
            datapath_->attach_mode(u.datapath_id) + " mode, mark 0x" + [&] {
              char b[16];
              snprintf(b, sizeof b, "%x", mark);
              return std::string(b);
            }());
  if (!at_start) hooks_.enqueue("ifup", cfg.name, cfg.device, false);
  if (!at_start && hygiene_) hygiene_->on_event(cfg.id, u.monitor->mark(), "ifup");
  // Spread the uplinks' cycles over the interval so their probes never go out together.
  const size_t index = static_cast<size_t>(std::distance(uplinks_.begin(), uplinks_.find(cfg.id)));
  const double phase = cfg.interval_s * static_cast<double>(index) / static_cast<double>(uplinks_.size());
  if (u.adopted_state) {
    // Continues the predecessor's verdict: no `connected`, no reset, the same record as before.
    u.monitor->adopt(ifindex, u.datapath_id, phase, now, *u.adopted_state);
    const bool online =
        *u.adopted_state == health::State::Online || *u.adopted_state == health::State::Disconnecting;
    (online ? u.online_since : u.offline_since) = now;  // the predecessor's times are not kept
    u.adopted_state.reset();
  } else {
    u.monitor->start(ifindex, u.datapath_id, at_start ? phase : 0.0, now);
  }
  pmtu_uplink_up(u, now);
  state_dirty_ = true;
  write_record(u);
}

// True while the device lacks the addresses its routes need (device_readiness.h).
bool Daemon::wait_for_addresses(Uplink& u, const LinkState& link, int family, int64_t now) {
  if (!waits_for_addresses(link)) return false;
  const std::string missing = missing_addresses(link, family, read_device_addresses(u.cfg->device, family));
  if (missing.empty()) return false;
  wait_for_device(u, missing, now);
  return true;
}

// The uplink waits for its device (`missing` ends "device ..."), logged once per wait: the address
// notification that ends the wait triggers the next attempt (retry_bring_up_soon); kRetryNs is only
// the backstop should that notification be missed.
void Daemon::wait_for_device(Uplink& u, const std::string& missing, int64_t now) {
  const std::string why = "interface " + u.cfg->name + " (" + u.cfg->device + "): device " + missing;
  if (u.last_error != why) log::info(why + "; its routes go in when the kernel announces its addresses");
  u.last_error = why;
  u.retry_at = now + kRetryNs;
}

void Daemon::bring_down(Uplink& u, int64_t now, bool vanished, const std::string& why) {
  const config::InterfaceConfig& cfg = *u.cfg;
  log::notice("interface " + cfg.name + " (" + cfg.device + "): " +
              (!why.empty() ? why
               : vanished   ? "device vanished"
                            : "device is down"));
  u.monitor->stop(now);
  pmtu_uplink_down(u);
  hooks_.enqueue("ifdown", cfg.name, "", false);  // mwan3: DEVICE is empty on ifdown
  if (hygiene_ && !stopping_) hygiene_->on_event(cfg.id, u.monitor->mark(), "ifdown");
  routes_.remove(cfg.id, cfg.family == config::Family::Ipv6 ? AF_INET6 : AF_INET);
  if (policy_) {
    policy_->uplink_down({cfg.id, cfg.device, cfg.family == config::Family::Ipv6 ? AF_INET6 : AF_INET, 0});
  }
  wireguard_uplink_down(u);
  if (vanished) release_device(u);
  u.device_up = false;
  u.gateway.reset();
  state_dirty_ = true;
  write_record(u);
  update_local_routes();
  update_wireguard();
}

bool Daemon::attach_device(Uplink& u, int ifindex, bool ethernet) {
  auto it = attachments_.find(ifindex);
  if (it != attachments_.end()) {
    ++it->second.users;
    u.datapath_id = it->second.datapath_id;
    u.attached = true;
    return true;
  }
  datapath::AttachOptions o;
  o.uplink_id = u.cfg->id;
  o.device = u.cfg->device;
  o.ifindex = ifindex;
  o.l3_only = !ethernet;
  o.reply_mark = config_.globals.probe_reply_mark;
  o.reply_mark_mask = config_.globals.probe_reply_mark_mask;
  datapath_->attach(o);
  attachments_[ifindex] = {u.cfg->id, 1};
  u.datapath_id = u.cfg->id;
  u.attached = true;
  return true;
}

void Daemon::release_device(Uplink& u) {
  if (!u.attached) return;
  u.attached = false;
  auto it = attachments_.find(u.ifindex);
  if (it == attachments_.end() || --it->second.users > 0) return;
  wireguard_release_device(it->first);  // before the datapath, which may remove the clsact qdisc
  datapath_->detach(it->second.datapath_id);
  attachments_.erase(it);
}

}  // namespace uplinkd
