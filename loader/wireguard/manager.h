// Ties WireGuard discovery, the datapath's endpoint map and route hygiene together for the daemon:
// every endpoint (discovered from the devices, or static from `config wireguard`) is written to
// the steering program's wg_endpoints with the policy it follows; host routes to endpoints follow
// the endpoint's active uplink; `uplinkctl wireguard` gets one JSON entry per peer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "maps/uplinkd_maps.h"
#include "wireguard/endpoint_routes.h"
#include "wireguard/watcher.h"

namespace uplinkd::datapath {
class WgSteering;
class MssClamp;
}  // namespace uplinkd::datapath

namespace uplinkd::wireguard {

// An uplink (enabled mwan3 interface) as the daemon knows it now.
struct UplinkInfo {
  uint32_t id = 0;  // interface id: also its routing table and its id in policy entries
  std::string interface;
  std::string device;
  int ifindex = 0;  // 0 while the device is absent
  int family = 0;   // AF_INET or AF_INET6
  std::optional<IpAddress> gateway;
  bool online = false;
  std::optional<int> path_mtu;  // measured (loader/pmtu/path_mtu.h); nullopt: not known
  int device_mtu = 0;           // 0 while the device is absent
};

// Which uplink a policy sends an endpoint to now (interface id, 0: none online). The daemon's is
// pinned_policy_resolver(); tests give their own.
using ActiveUplinkResolver =
    std::function<uint32_t(uint32_t policy_id, int family, const wg_endpoint_key& key)>;

// Reads the classifier's pinned `policies` map under pin_dir and picks as the steering program
// does (WgSteering::active_uplink), so `uplink` in the CLI is where packets really go.
ActiveUplinkResolver pinned_policy_resolver(const std::string& pin_dir);

class WireguardManager {
 public:
  // `policy_ids`: policy name -> id (PolicyRuntime::compile(cfg).policy_ids). `steering` may be null
  // (no datapath steering: discovery and routes only). The config is copied.
  WireguardManager(const config::Config& cfg, std::map<std::string, uint32_t> policy_ids,
                   datapath::WgSteering* steering, ActiveUplinkResolver resolver,
                   std::string uapi_dir = kDefaultUapiDir);
  ~WireguardManager();  // removes its endpoints from the map; routes are put back
  WireguardManager(const WireguardManager&) = delete;
  WireguardManager& operator=(const WireguardManager&) = delete;

  // On every uplink change (state, device, gateway): routes follow at once.
  void set_uplinks(std::vector<UplinkInfo> uplinks);
  // Every few seconds: devices and peers read again, endpoint map and routes brought in step.
  void poll();
  // Puts back routes and removes endpoints now (the destructor does it too).
  void stop();
  // Endpoints in the steering program's wg_endpoints now: while there is none, the daemon keeps the
  // program off the uplinks.
  [[nodiscard]] size_t steered_endpoints() const;
  // The MSS clamp for devices with `option clamp_mss '1'` (null: none; it is then reported).
  void set_mss_clamp(datapath::MssClamp* clamp) { mss_clamp_ = clamp; }

  // {"peers": [{device, peer, endpoint, implementation, source, policy, policy_from, uplink,
  //   uplink_device, steered_packets, stale_routes, fixed_routes, guard_route, problems}],
  //  "problems": [...]}
  [[nodiscard]] nlohmann::json json() const;

 private:
  struct Tracked {  // one peer or static endpoint
    std::string device;
    std::string peer;  // public key; empty for a static endpoint
    std::optional<Endpoint> endpoint;
    std::string implementation;
    bool from_config = false;
    int wg_ifindex = 0;
    uint32_t wg_fwmark = 0;
  };
  struct PolicyChoice {
    std::string name;            // empty: none
    std::string from;            // "option policy" or "rule 'default_rule_v4'"
    std::optional<uint32_t> id;  // nullopt: not a policy (default/unreachable/blackhole, or none)
  };
  struct EndpointState {
    uint32_t endpoint_id = 0;
    uint32_t policy_id = 0;
    bool in_map = false;
  };

  std::vector<Tracked> collect() const;
  PolicyChoice policy_for(const std::string& device, int family) const;
  const config::WireguardConfig* device_config(const std::string& device) const;
  void sync_endpoints(const std::vector<Tracked>& tracked);
  void remove_predecessor_endpoints(const std::map<std::string, uint32_t>& wanted);
  void refresh_routes();
  std::optional<uint32_t> active_uplink_id(const Tracked& t) const;
  const UplinkInfo* uplink(uint32_t id) const;
  std::optional<uint32_t> allocate_endpoint_id();
  void log_changes(const WatchChanges& changes) const;
  void warn_about_fwmarks();
  // Each peer's device MTU against the path MTU of every uplink its policy may use (mtu_check.h).
  [[nodiscard]] std::vector<const UplinkInfo*> policy_uplinks(const std::string& policy, int family) const;
  [[nodiscard]] nlohmann::json mtu_json(const Tracked& t, std::vector<std::string>* problems) const;
  void check_mtus();
  // Devices with clamp_mss: the clamp follows the path MTU of the uplink their endpoints use now.
  void update_mss_clamp();

  config::Config cfg_;
  std::map<std::string, uint32_t> policy_ids_;
  datapath::WgSteering* steering_;
  ActiveUplinkResolver resolver_;
  WireguardWatcher watcher_;
  EndpointRoutes routes_;
  std::vector<UplinkInfo> uplinks_;
  std::vector<Tracked> tracked_;
  std::map<std::string, EndpointState> endpoints_;  // by Endpoint::str()
  std::set<uint32_t> free_ids_;
  std::map<std::string, EndpointRouteReport> route_reports_;  // by endpoint address
  std::map<std::string, uint32_t> fwmark_warned_;             // device -> fwmark last checked
  std::vector<std::string> problems_;
  std::set<std::string> mtu_problems_logged_;
  datapath::MssClamp* mss_clamp_ = nullptr;
  struct ClampState {
    int ifindex = 0;
    uint16_t mss4 = 0, mss6 = 0;
    std::string uplink;  // the uplink whose path it fits
    std::string error;   // why it is not applied
  };
  std::map<std::string, ClampState> clamps_;  // by device
  bool stopped_ = false;
  bool predecessor_endpoints_checked_ = false;  // the first sync removes the map's endpoints no peer has
};

}  // namespace uplinkd::wireguard
