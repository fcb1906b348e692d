// The daemon's part in measuring each uplink's path MTU (loader/pmtu/path_mtu.h): a prober per
// uplink while its device is up, measuring when the device comes up, when the uplink goes online,
// when the device's MTU changes and every pmtu_interval; its figures go to the status, the metrics
// and the WireGuard checks.
#include <sys/socket.h>
#include <sys/stat.h>

#include "common/link_mtu.h"
#include "common/log.h"
#include "daemon/daemon.h"
#include "datapath/mss_clamp.h"

namespace uplinkd {

void Daemon::pmtu_uplink_up(Uplink& u, int64_t now) {
  u.pmtu.reset();
  const config::InterfaceConfig& cfg = *u.cfg;
  if (cfg.pmtu_interval_s == 0) return;  // measuring off
  pmtu::PathMtuProber::Options options;
  options.interval_s = cfg.pmtu_interval_s;
  options.max_ttl = cfg.max_ttl;
  u.pmtu = std::make_unique<pmtu::PathMtuProber>(cfg.name, cfg.device, u.monitor->mark(),
                                                 cfg.family == config::Family::Ipv6 ? AF_INET6 : AF_INET,
                                                 cfg.track_ip, *datapath_, options);
  u.pmtu->start(u.ifindex, u.datapath_id, link_mtu(cfg.device).value_or(0), now);
}

void Daemon::pmtu_uplink_down(Uplink& u) {
  if (u.pmtu) u.pmtu->stop();
  u.pmtu.reset();
}

// PPPoE renegotiates its MTU on a redial; a VLAN to a modem can be changed by hand.
void Daemon::check_device_mtus(int64_t now) {
  for (auto& [id, u] : uplinks_) {
    if (!u.device_up || !u.pmtu) continue;
    const int mtu = link_mtu(u.cfg->device).value_or(0);
    const int known = u.pmtu->result().device_mtu;
    if (mtu == 0 || mtu == known) continue;
    log::notice("interface " + u.cfg->name + " (" + u.cfg->device + "): device MTU " + std::to_string(known) +
                " -> " + std::to_string(mtu) + ": measuring the path MTU again");
    u.pmtu->set_device_mtu(mtu, now);
  }
}

void Daemon::run_pmtu(int64_t now) {
  bool changed = false;
  for (auto& [id, u] : uplinks_) {
    if (!u.pmtu) continue;
    const std::optional<int> before = u.pmtu->result().mtu;
    const int64_t measured_before = u.pmtu->result().measured_at_ns;
    u.pmtu->run(now);
    changed |= u.pmtu->result().mtu != before || u.pmtu->result().measured_at_ns != measured_before;
  }
  // The WireGuard checks and the MSS clamp follow every new figure.
  if (changed) update_wireguard();
}

std::optional<int> Daemon::path_mtu_of(const Uplink& u) const {
  if (!u.pmtu) return std::nullopt;
  return u.pmtu->result().mtu;
}

nlohmann::json Daemon::path_mtu_json(const Uplink& u, int64_t now) const {
  if (u.cfg->pmtu_interval_s == 0) return {{"state", "off"}};
  if (!u.pmtu) return {{"state", "unknown"}, {"mtu", nullptr}, {"note", "device down"}};
  return u.pmtu->json(now);
}

void Daemon::create_mss_clamp() {
  bool wanted = false;
  for (const config::WireguardConfig& wg : config_.wireguard) wanted |= wg.clamp_mss;
  // A predecessor's clamp (restart in place) is taken over even when this configuration has none,
  // so that the WireGuard manager removes it from its devices.
  struct stat st {};
  const bool inherited = stat((datapath_->pin_dir() + "/" + UPLINKD_MAP_MSS_CLAMP).c_str(), &st) == 0;
  if ((!wanted && !inherited) || mss_clamp_) return;
  try {
    mss_clamp_ = std::make_unique<datapath::MssClamp>(datapath_->pin_dir());
  } catch (const std::exception& e) {
    log::warn(std::string("WireGuard MSS clamping unavailable: ") + e.what());
  }
}

}  // namespace uplinkd
