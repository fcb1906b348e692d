// The daemon's part in keeping WireGuard endpoints on the active uplink: the steering program rides
// on every up uplink's tc egress while wg_endpoints has an endpoint (and on none otherwise: a router
// without WireGuard pays no parse and lookup per forwarded packet for it), each uplink's source
// address and gateway are published for it whether or not it is attached (ready the moment an
// endpoint appears), and the WireguardManager (discovery, endpoint map, route hygiene) hears of
// every uplink change.
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <cstring>
#include <memory>
#include <set>

#include "common/link_mtu.h"
#include "common/log.h"
#include "daemon/daemon.h"
#include "datapath/mss_clamp.h"
#include "policy/rule_compiler.h"

namespace uplinkd {

namespace {

constexpr int64_t kWireguardPollNs = 5'000'000'000;  // peers and endpoints (DDNS, roaming) read again

// The first global address of `family` on `device`: what a steered packet must carry as its source
// so the reply comes back by the same uplink (and WireGuard's roaming follows it).
std::optional<IpAddress> global_address(const std::string& device, int family) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return std::nullopt;
  std::optional<IpAddress> found;
  for (ifaddrs* a = list; a != nullptr && !found; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != family || device != a->ifa_name) continue;
    IpAddress ip;
    ip.family = family;
    if (family == AF_INET) {
      std::memcpy(ip.bytes.data(), &reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr, 4);
    } else {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr)) continue;
      std::memcpy(ip.bytes.data(), &in6->sin6_addr, 16);
    }
    found = ip;
  }
  freeifaddrs(list);
  return found;
}

}  // namespace

// Before the uplinks come up, so each one's bring-up publishes its record (and, after a restart,
// takes over the filter its predecessor left).
void Daemon::create_wg_steering() {
  try {
    wg_steering_ = std::make_unique<datapath::WgSteering>(datapath_->pin_dir());
  } catch (const std::exception& e) {
    // Discovery and route hygiene still work; only the datapath rewrite is missing.
    log::warn(std::string("WireGuard steering unavailable, endpoints follow routes only: ") + e.what());
  }
}

void Daemon::start_wireguard() {
  // Afresh each time (a reload may have turned clamp_mss off): the old one detaches from every device.
  mss_clamp_.reset();
  create_mss_clamp();
  wireguard_ = std::make_unique<wireguard::WireguardManager>(
      config_, policy::assign_policy_ids(config_), wg_steering_.get(),
      wireguard::pinned_policy_resolver(datapath_->pin_dir()));
  wireguard_->set_mss_clamp(mss_clamp_.get());
  update_wireguard();
  wireguard_->poll();
  reconcile_wg_steering();
  next_wireguard_poll_ = health::monotonic_ns() + kWireguardPollNs;
}

void Daemon::stop_wireguard() {
  wireguard_.reset();  // routes put back, endpoints out of the map
  mss_clamp_.reset();
  wg_steering_.reset();  // before the datapath: it detaches from devices the datapath may tear down
}

void Daemon::wireguard_uplink_up(const Uplink& u, bool ethernet) {
  if (!wg_steering_) return;
  const WgUplinkDevice device{u.ifindex, u.cfg->device, !ethernet};
  wg_uplink_devices_[u.cfg->id] = device;
  // Before the manager's first poll (a start) nothing is known of the endpoints: a filter the
  // predecessor left stays, taken over in place (no gap for a restart's tunnels), and none is added.
  // That poll attaches or detaches it everywhere.
  steer_device(device, wg_steering_wanted_.value_or(datapath::WgSteering::present(u.ifindex)));
  datapath::UplinkEgressInfo info;
  info.ifindex = u.ifindex;
  const int family = u.cfg->family == config::Family::Ipv6 ? AF_INET6 : AF_INET;
  (family == AF_INET ? info.src4 : info.src6) = global_address(u.cfg->device, family);
  (family == AF_INET ? info.gw4 : info.gw6) = u.gateway;
  if (int err = wg_steering_->write_uplink_egress(u.cfg->id, info); err != 0) {
    log::warn("interface " + u.cfg->name + ": WireGuard steering record: " + std::strerror(-err));
  }
}

void Daemon::wireguard_uplink_down(const Uplink& u) {
  wg_uplink_devices_.erase(u.cfg->id);
  if (wg_steering_) wg_steering_->clear_uplink_egress(u.cfg->id);
}

bool Daemon::steer_device(const WgUplinkDevice& d, bool wanted) {
  if (!wanted) {
    wg_steering_->detach(d.ifindex);
    return true;
  }
  try {
    wg_steering_->attach(d.ifindex, d.device, d.l3_only);
    return true;
  } catch (const std::exception& e) {
    log::warn("device " + d.device + ": WireGuard steering not attached: " + e.what());
    return false;
  }
}

// The one place that decides whether wg_steer is wanted: while the manager has an endpoint in
// wg_endpoints, on every up uplink's device; otherwise on none. Acts (and logs) only when that
// changes; uplinks coming up later follow wireguard_uplink_up.
void Daemon::reconcile_wg_steering() {
  if (!wg_steering_ || !wireguard_) return;
  const size_t endpoints = wireguard_->steered_endpoints();
  const bool wanted = endpoints > 0;
  if (wg_steering_wanted_ == wanted) return;
  wg_steering_wanted_ = wanted;
  std::set<int> done;  // two uplinks (IPv4 and IPv6) may share a device
  std::string changed;
  for (const auto& [id, device] : wg_uplink_devices_) {
    if (!done.insert(device.ifindex).second) continue;
    const bool had = wg_steering_->attached(device.ifindex) || datapath::WgSteering::present(device.ifindex);
    if (steer_device(device, wanted) && had != wanted)
      changed += (changed.empty() ? "" : ", ") + device.device;
  }
  if (!wanted) wg_steering_->detach_all();  // also the devices of uplinks that went down meanwhile
  if (changed.empty()) return;
  if (wanted) {
    log::info("WireGuard steering attached on " + changed + " (tc egress): " + std::to_string(endpoints) +
              (endpoints == 1 ? " endpoint" : " endpoints"));
  } else {
    log::info("WireGuard steering detached from " + changed + ": no WireGuard endpoint left");
  }
}

void Daemon::wireguard_release_device(int ifindex) {
  if (wg_steering_ && wg_steering_->attached(ifindex)) wg_steering_->detach(ifindex);
}

void Daemon::update_wireguard() {
  if (!wireguard_) return;
  std::vector<wireguard::UplinkInfo> views;
  for (const auto& [id, u] : uplinks_) {
    const health::State s = u.monitor->tracker().state();
    views.push_back({id, u.cfg->name, u.cfg->device, u.device_up ? u.ifindex : 0,
                     u.cfg->family == config::Family::Ipv6 ? AF_INET6 : AF_INET, u.gateway,
                     u.device_up && (s == health::State::Online || s == health::State::Disconnecting),
                     path_mtu_of(u), u.device_up ? link_mtu(u.cfg->device).value_or(0) : 0});
  }
  wireguard_->set_uplinks(std::move(views));
}

void Daemon::poll_wireguard(int64_t now) {
  if (!wireguard_ || now < next_wireguard_poll_) return;
  next_wireguard_poll_ = now + kWireguardPollNs;
  wireguard_->poll();
  reconcile_wg_steering();
}

}  // namespace uplinkd
