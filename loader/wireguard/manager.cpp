#include "wireguard/manager.h"

#include <bpf/bpf.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/link_mtu.h"
#include "common/log.h"
#include "datapath/mss_clamp.h"
#include "datapath/wg_steering.h"
#include "lifecycle/teardown.h"
#include "wireguard/mtu_check.h"
#include "wireguard/wireguard_text.h"

namespace uplinkd::wireguard {
namespace {

datapath::WgEndpoint to_wg_endpoint(const Endpoint& endpoint) { return {endpoint.address, endpoint.port}; }

nlohmann::json string_list(const std::vector<std::string>& items) {
  nlohmann::json list = nlohmann::json::array();
  for (const std::string& item : items) list.push_back(item);
  return list;
}

}  // namespace

ActiveUplinkResolver pinned_policy_resolver(const std::string& pin_dir) {
  return [path = pin_dir + "/" + UPLINKD_MAP_POLICIES](uint32_t policy_id, int family,
                                                       const wg_endpoint_key& key) -> uint32_t {
    int fd = bpf_obj_get(path.c_str());
    if (fd < 0) return 0;
    policy_entry entry{};
    uint32_t slot = UPLINKD_POLICY_SLOT(policy_id, family == AF_INET6 ? 6 : 4);
    int err = bpf_map_lookup_elem(fd, &slot, &entry);
    close(fd);
    return err == 0 ? datapath::WgSteering::active_uplink(entry, key) : 0;
  };
}

WireguardManager::WireguardManager(const config::Config& cfg, std::map<std::string, uint32_t> policy_ids,
                                   datapath::WgSteering* steering, ActiveUplinkResolver resolver,
                                   std::string uapi_dir)
    : cfg_(cfg),
      policy_ids_(std::move(policy_ids)),
      steering_(steering),
      resolver_(std::move(resolver)),
      watcher_(std::move(uapi_dir)) {
  for (uint32_t id = 0; id < UPLINKD_MAX_WG_ENDPOINTS; ++id) free_ids_.insert(id);
  for (const config::WireguardConfig& wg : cfg_.wireguard) {
    for (const std::string& sentence : wg.unsupported_endpoints) log::warn(sentence);
  }
}

WireguardManager::~WireguardManager() { stop(); }

void WireguardManager::stop() {
  if (stopped_) return;
  stopped_ = true;
  // A restart in place: endpoints stay steered and routes stay fixed until the next daemon takes over.
  if (lifecycle::keep_kernel_state()) return;
  if (steering_ != nullptr) {
    for (const auto& [text, state] : endpoints_) {
      if (!state.in_map) continue;
      if (std::optional<Endpoint> endpoint = parse_endpoint(text))
        steering_->remove_endpoint(to_wg_endpoint(*endpoint));
    }
  }
  endpoints_.clear();
  routes_.restore_all();
}

void WireguardManager::set_uplinks(std::vector<UplinkInfo> uplinks) {
  uplinks_ = std::move(uplinks);
  std::map<uint32_t, int> tables;
  for (const UplinkInfo& u : uplinks_) {
    if (u.ifindex > 0) tables[u.id] = u.ifindex;
  }
  routes_.set_uplink_tables(std::move(tables));
  if (stopped_) return;
  refresh_routes();
  check_mtus();
  update_mss_clamp();
}

void WireguardManager::poll() {
  if (stopped_) return;
  WatchChanges changes = watcher_.poll();
  log_changes(changes);
  tracked_ = collect();
  warn_about_fwmarks();
  sync_endpoints(tracked_);
  refresh_routes();
  check_mtus();
  update_mss_clamp();
}

size_t WireguardManager::steered_endpoints() const {
  size_t n = 0;
  for (const auto& [text, state] : endpoints_) {
    if (state.in_map) ++n;
  }
  return n;
}

// Once per device and fwmark: the log would otherwise repeat it every poll.
void WireguardManager::warn_about_fwmarks() {
  std::map<std::string, uint32_t> now;
  for (const Tracked& t : tracked_) now[t.device] = t.wg_fwmark;
  for (const auto& [device, fwmark] : now) {
    auto seen = fwmark_warned_.find(device);
    if (seen != fwmark_warned_.end() && seen->second == fwmark) continue;
    const std::string problem = fwmark_problem(device, fwmark, cfg_);
    if (!problem.empty()) log::warn("wireguard: " + problem);
  }
  fwmark_warned_ = std::move(now);
}

void WireguardManager::log_changes(const WatchChanges& changes) const {
  for (const std::string& device : changes.devices_added)
    log::info("wireguard: device " + device + " appeared");
  for (const std::string& device : changes.devices_removed)
    log::info("wireguard: device " + device + " vanished");
  auto endpoint_text = [](const std::optional<Endpoint>& e) { return e ? e->str() : std::string("none"); };
  for (const PeerState& p : changes.added) {
    log::info("wireguard: " + p.device + " peer " + p.public_key + " endpoint " + endpoint_text(p.endpoint));
  }
  for (const PeerState& p : changes.removed)
    log::info("wireguard: " + p.device + " peer " + p.public_key + " gone");
  for (const EndpointMove& m : changes.moved) {
    log::notice("wireguard: " + m.now.device + " peer " + m.now.public_key + " endpoint moved from " +
                endpoint_text(m.before.endpoint) + " to " + endpoint_text(m.now.endpoint));
  }
}

const config::WireguardConfig* WireguardManager::device_config(const std::string& device) const {
  return cfg_.find_wireguard(device);
}

std::vector<WireguardManager::Tracked> WireguardManager::collect() const {
  std::vector<Tracked> tracked;
  for (const PeerState& p : watcher_.peers()) {
    tracked.push_back(
        Tracked{p.device, p.public_key, p.endpoint, p.implementation, false, p.device_ifindex, p.fwmark});
  }
  for (const config::WireguardConfig& wg : cfg_.wireguard) {
    int ifindex = static_cast<int>(if_nametoindex(wg.device.c_str()));
    uint32_t fwmark = 0;
    for (const Device& d : watcher_.devices()) {
      if (d.name == wg.device) fwmark = d.fwmark;
    }
    for (const config::WireguardConfig::StaticEndpoint& e : wg.endpoints) {
      tracked.push_back(Tracked{wg.device, "", Endpoint{e.address, e.port}, "config", true, ifindex, fwmark});
    }
  }
  return tracked;
}

WireguardManager::PolicyChoice WireguardManager::policy_for(const std::string& device, int family) const {
  PolicyChoice choice;
  const config::WireguardConfig* wg = device_config(device);
  if (wg != nullptr && !wg->policy.empty()) {
    choice.name = wg->policy;
    choice.from = "option policy";
  } else if (auto rule = config::default_rule_policy(
                 cfg_, family == AF_INET6 ? config::Family::Ipv6 : config::Family::Ipv4)) {
    choice.name = rule->policy;
    choice.from = "rule '" + rule->rule + "'";
  } else {
    choice.from = "no default rule";
  }
  auto id = policy_ids_.find(choice.name);
  if (id != policy_ids_.end()) choice.id = id->second;
  return choice;
}

std::optional<uint32_t> WireguardManager::allocate_endpoint_id() {
  if (free_ids_.empty()) return std::nullopt;
  uint32_t id = *free_ids_.begin();
  free_ids_.erase(free_ids_.begin());
  return id;
}

// Writes every endpoint that follows a policy to wg_endpoints and removes the ones gone. An
// endpoint shared by two peers is one map entry (the map is keyed by address and port).
void WireguardManager::sync_endpoints(const std::vector<Tracked>& tracked) {
  std::map<std::string, uint32_t> wanted;  // endpoint text -> policy id
  for (const Tracked& t : tracked) {
    if (!t.endpoint) continue;
    PolicyChoice policy = policy_for(t.device, t.endpoint->address.family);
    if (policy.id) wanted.emplace(t.endpoint->str(), *policy.id);
  }
  if (!predecessor_endpoints_checked_ && steering_ != nullptr) {
    predecessor_endpoints_checked_ = true;
    remove_predecessor_endpoints(wanted);
  }
  for (auto it = endpoints_.begin(); it != endpoints_.end();) {
    if (wanted.count(it->first) != 0) {
      ++it;
      continue;
    }
    if (steering_ != nullptr && it->second.in_map) {
      if (std::optional<Endpoint> endpoint = parse_endpoint(it->first))
        steering_->remove_endpoint(to_wg_endpoint(*endpoint));
    }
    free_ids_.insert(it->second.endpoint_id);
    it = endpoints_.erase(it);
  }
  for (const auto& [text, policy_id] : wanted) {
    auto known = endpoints_.find(text);
    if (known != endpoints_.end() && known->second.policy_id == policy_id &&
        (known->second.in_map || steering_ == nullptr)) {
      continue;
    }
    EndpointState state = known != endpoints_.end() ? known->second : EndpointState{};
    if (known == endpoints_.end()) {
      std::optional<uint32_t> id = allocate_endpoint_id();
      if (!id) {
        log::warn("wireguard: endpoint " + text + " not steered: all " +
                  std::to_string(UPLINKD_MAX_WG_ENDPOINTS) + " endpoint slots in use");
        continue;
      }
      state.endpoint_id = *id;
    }
    state.policy_id = policy_id;
    if (steering_ != nullptr) {
      int err =
          steering_->write_endpoint(to_wg_endpoint(*parse_endpoint(text)), policy_id, state.endpoint_id);
      state.in_map = err == 0;
      if (err != 0) {
        log::warn("wireguard: writing endpoint " + text + " to the datapath: " + std::strerror(-err) +
                  " (errno " + std::to_string(-err) + ")");
      }
    }
    endpoints_[text] = state;
  }
}

// A restart keeps wg_endpoints as the previous daemon left it: the endpoints of peers that went while
// no daemon ran would be steered (and keep the program on the uplinks) for nobody.
void WireguardManager::remove_predecessor_endpoints(const std::map<std::string, uint32_t>& wanted) {
  std::vector<datapath::WgEndpoint> keep;
  for (const auto& [text, policy_id] : wanted) {
    if (std::optional<Endpoint> endpoint = parse_endpoint(text)) keep.push_back(to_wg_endpoint(*endpoint));
  }
  const size_t removed = steering_->remove_endpoints_except(keep);
  if (removed > 0) {
    log::info("wireguard: " + std::to_string(removed) +
              " endpoint(s) of the previous daemon removed from the datapath: no peer has them now");
  }
}

const UplinkInfo* WireguardManager::uplink(uint32_t id) const {
  for (const UplinkInfo& u : uplinks_) {
    if (u.id == id) return &u;
  }
  return nullptr;
}

std::optional<uint32_t> WireguardManager::active_uplink_id(const Tracked& t) const {
  if (!t.endpoint || !resolver_) return std::nullopt;
  PolicyChoice policy = policy_for(t.device, t.endpoint->address.family);
  if (!policy.id) return std::nullopt;
  wg_endpoint_key key = datapath::WgSteering::endpoint_key(to_wg_endpoint(*t.endpoint));
  uint32_t id = resolver_(*policy.id, t.endpoint->address.family, key);
  if (id == 0) return std::nullopt;
  return id;
}

// One request per endpoint address (routes do not know ports); the first peer's device decides
// fix_endpoint_routes and the tunnel to guard against.
namespace {

// A route moved under an endpoint is said in the log: a tunnel silently pinned to the wrong uplink
// is what the field reports suffered from, so every fix, guard and stale route found is on record.
void log_route_changes(const std::string& endpoint, const EndpointRouteReport& before,
                       const EndpointRouteReport& now) {
  for (const std::string& f : now.fixed) {
    if (std::find(before.fixed.begin(), before.fixed.end(), f) == before.fixed.end())
      log::notice("wireguard: endpoint " + endpoint + ": host route moved: " + f);
  }
  if (now.guard != before.guard) {
    log::notice("wireguard: endpoint " + endpoint + ": full-tunnel guard route " +
                (now.guard.empty() ? "removed (was " + before.guard + ")" : now.guard));
  }
  for (const std::string& r : now.stale) {
    if (std::find(before.stale.begin(), before.stale.end(), r) == before.stale.end())
      log::warn("wireguard: endpoint " + endpoint +
                ": host route pinned to another uplink (fix_endpoint_routes off): " + r);
  }
}

}  // namespace

void WireguardManager::refresh_routes() {
  std::vector<EndpointRouteRequest> requests;
  std::vector<std::string> addresses;
  for (const Tracked& t : tracked_) {
    if (!t.endpoint) continue;
    const std::string address = t.endpoint->address.str();
    if (std::find(addresses.begin(), addresses.end(), address) != addresses.end()) continue;
    EndpointRouteRequest request;
    request.endpoint = t.endpoint->address;
    const config::WireguardConfig* wg = device_config(t.device);
    request.fix = wg == nullptr || wg->fix_endpoint_routes;
    request.wg_ifindex = t.wg_ifindex;
    request.wg_fwmark = t.wg_fwmark;
    if (std::optional<uint32_t> id = active_uplink_id(t)) {
      const UplinkInfo* u = uplink(*id);
      if (u != nullptr && u->ifindex > 0) request.active = ActiveUplink{u->ifindex, u->gateway};
    }
    requests.push_back(request);
    addresses.push_back(address);
  }
  std::vector<EndpointRouteReport> reports = routes_.refresh(requests);
  std::map<std::string, EndpointRouteReport> previous = std::move(route_reports_);
  route_reports_.clear();
  for (size_t i = 0; i < reports.size(); ++i) {
    for (const std::string& problem : reports[i].problems) log::warn("wireguard: " + problem);
    log_route_changes(addresses[i], previous[addresses[i]], reports[i]);
    route_reports_[addresses[i]] = std::move(reports[i]);
  }
}

nlohmann::json WireguardManager::json() const {
  nlohmann::json peers = nlohmann::json::array();
  for (const Tracked& t : tracked_) {
    nlohmann::json peer;
    peer["device"] = t.device;
    peer["peer"] = t.peer;
    peer["endpoint"] = t.endpoint ? t.endpoint->str() : "none";
    peer["implementation"] = t.implementation;
    peer["source"] = t.from_config ? "config" : "discovered";
    PolicyChoice policy = policy_for(t.device, t.endpoint ? t.endpoint->address.family : AF_INET);
    peer["policy"] = policy.name;
    peer["policy_from"] = policy.from;
    peer["uplink"] = nullptr;
    peer["uplink_device"] = nullptr;
    if (std::optional<uint32_t> id = active_uplink_id(t)) {
      if (const UplinkInfo* u = uplink(*id)) {
        peer["uplink"] = u->interface;
        peer["uplink_device"] = u->device;
      }
    }
    uint64_t steered = 0;
    if (t.endpoint && steering_ != nullptr) {
      auto state = endpoints_.find(t.endpoint->str());
      if (state != endpoints_.end() && state->second.in_map)
        steered = steering_->counters(state->second.endpoint_id).steered_packets;
    }
    peer["steered_packets"] = steered;
    EndpointRouteReport report;
    if (t.endpoint) {
      auto found = route_reports_.find(t.endpoint->address.str());
      if (found != route_reports_.end()) report = found->second;
    }
    peer["stale_routes"] = string_list(report.stale);
    peer["fixed_routes"] = string_list(report.fixed);
    peer["guard_route"] = report.guard;
    std::vector<std::string> problems = report.problems;
    if (!t.endpoint) problems.push_back("no endpoint yet (the peer has not contacted us): nothing to steer");
    if (t.endpoint && !policy.id) {
      problems.push_back("follows no policy (" +
                         (policy.name.empty() ? policy.from : policy.name + ", " + policy.from) +
                         "): not steered");
    }
    peer["mtu"] = mtu_json(t, &problems);
    peer["problems"] = string_list(problems);
    peers.push_back(std::move(peer));
  }
  std::vector<std::string> problems = watcher_.problems();
  for (const auto& [device, fwmark] : fwmark_warned_) {
    const std::string problem = fwmark_problem(device, fwmark, cfg_);
    if (!problem.empty()) problems.push_back(problem);
  }
  for (const config::WireguardConfig& wg : cfg_.wireguard) {
    problems.insert(problems.end(), wg.unsupported_endpoints.begin(), wg.unsupported_endpoints.end());
  }
  nlohmann::json clamps = nlohmann::json::object();
  for (const auto& [device, c] : clamps_) {
    clamps[device] = {{"mss4", c.mss4}, {"mss6", c.mss6}, {"uplink", c.uplink}, {"error", c.error}};
    if (!c.error.empty()) problems.push_back(device + ": MSS clamp not applied: " + c.error);
  }
  return nlohmann::json{{"peers", peers}, {"problems", string_list(problems)}, {"mss_clamp", clamps}};
}

// The uplinks a policy may send an endpoint of `family` by: its members' interfaces of that family.
std::vector<const UplinkInfo*> WireguardManager::policy_uplinks(const std::string& policy, int family) const {
  std::vector<const UplinkInfo*> found;
  for (const config::PolicyConfig& p : cfg_.policies) {
    if (p.name != policy) continue;
    for (const std::string& member_name : p.use_member) {
      for (const config::MemberConfig& m : cfg_.members) {
        if (m.name != member_name) continue;
        for (const UplinkInfo& u : uplinks_) {
          if (u.interface == m.interface && u.family == family &&
              std::find(found.begin(), found.end(), &u) == found.end())
            found.push_back(&u);
        }
      }
    }
  }
  return found;
}

// {device_mtu, outer_overhead, largest_fitting_mtu, uplinks: {name: path MTU or null}}; a device
// that does not fit some uplink adds its sentence to `problems`.
nlohmann::json WireguardManager::mtu_json(const Tracked& t, std::vector<std::string>* problems) const {
  const std::optional<int> device_mtu = link_mtu(t.device);
  if (!t.endpoint || !device_mtu) return nullptr;
  const int family = t.endpoint->address.family;
  std::vector<UplinkPathMtu> paths;
  nlohmann::json uplinks = nlohmann::json::object();
  for (const UplinkInfo* u : policy_uplinks(policy_for(t.device, family).name, family)) {
    paths.push_back({u->interface, u->path_mtu});
    uplinks[u->interface] = u->path_mtu ? nlohmann::json(*u->path_mtu) : nlohmann::json(nullptr);
  }
  const TunnelMtuCheck check = check_tunnel_mtu(t.device, *device_mtu, family, paths);
  problems->insert(problems->end(), check.problems.begin(), check.problems.end());
  return {{"device_mtu", check.device_mtu},
          {"outer_overhead", check.overhead},
          {"largest_fitting_mtu", check.largest_fitting ? nlohmann::json(*check.largest_fitting) : nullptr},
          {"uplinks", uplinks}};
}

// Logs each misfit once, when it is first found (and again if it comes back after going away).
void WireguardManager::check_mtus() {
  std::set<std::string> now;
  for (const Tracked& t : tracked_) {
    std::vector<std::string> problems;
    (void)mtu_json(t, &problems);
    now.insert(problems.begin(), problems.end());
  }
  for (const std::string& problem : now) {
    if (mtu_problems_logged_.count(problem) == 0) log::warn("wireguard: " + problem);
  }
  mtu_problems_logged_ = std::move(now);
}

namespace {

// The smaller non-zero clamp (0: none yet).
uint16_t tighter(uint16_t a, uint16_t b) { return a == 0 ? b : (b == 0 ? a : std::min(a, b)); }

}  // namespace

// For each device with clamp_mss, the MSS that fits the path of the uplink each of its endpoints
// uses now (the smallest over its peers); the uplink's device MTU stands in while its path MTU is
// not measured. Written only when it changes, and said in the log, since it follows failovers.
void WireguardManager::update_mss_clamp() {
  std::map<std::string, ClampState> wanted;
  for (const config::WireguardConfig& wg : cfg_.wireguard) {
    if (wg.clamp_mss) wanted[wg.device].ifindex = static_cast<int>(if_nametoindex(wg.device.c_str()));
  }
  for (const Tracked& t : tracked_) {
    auto w = wanted.find(t.device);
    if (w == wanted.end() || !t.endpoint) continue;
    std::optional<uint32_t> id = active_uplink_id(t);
    const UplinkInfo* u = id ? uplink(*id) : nullptr;
    if (u == nullptr) continue;
    const int path = u->path_mtu.value_or(u->device_mtu);
    if (path <= 0) continue;
    const int overhead = outer_overhead(t.endpoint->address.family);
    const int tunnel_mtu = link_mtu(t.device).value_or(0);
    w->second.mss4 = tighter(w->second.mss4, mss_for_path(path, overhead, AF_INET, tunnel_mtu));
    w->second.mss6 = tighter(w->second.mss6, mss_for_path(path, overhead, AF_INET6, tunnel_mtu));
    w->second.uplink = u->interface + (u->path_mtu ? "" : " (device MTU; path not measured yet)");
  }
  for (auto& [device, want] : wanted) {
    ClampState& have = clamps_[device];
    // The device was re-created: the old attachment went with it.
    if (mss_clamp_ != nullptr && have.ifindex > 0 && have.ifindex != want.ifindex)
      mss_clamp_->detach(have.ifindex);
    if (mss_clamp_ == nullptr) {
      want.error = "the clamp program is not loaded (see the log at start)";
    } else if (want.ifindex == 0) {
      want.error = "no device " + device + " yet";
    } else if (want.mss4 == 0 && want.mss6 == 0) {
      want.error = "no active uplink for its endpoints yet";
      mss_clamp_->clear(want.ifindex);
    } else {
      try {
        mss_clamp_->attach(want.ifindex, device, true);
        if (const int err = mss_clamp_->set(want.ifindex, want.mss4, want.mss6); err != 0)
          want.error = std::string("writing the clamp: ") + std::strerror(-err);
      } catch (const std::exception& e) {
        want.error = e.what();
      }
    }
    if (want.mss4 != have.mss4 || want.mss6 != have.mss6 || want.error != have.error) {
      if (want.error.empty()) {
        log::notice("wireguard: " + device + ": TCP MSS clamped to " + std::to_string(want.mss4) +
                    " (IPv4), " + std::to_string(want.mss6) + " (IPv6) for uplink " + want.uplink);
      } else {
        log::warn("wireguard: " + device + ": MSS clamp not applied: " + want.error);
      }
    }
    have = want;
  }
  for (auto it = clamps_.begin(); it != clamps_.end();) {
    if (wanted.count(it->first) != 0) {
      ++it;
      continue;
    }
    if (mss_clamp_ != nullptr && it->second.ifindex > 0) mss_clamp_->detach(it->second.ifindex);
    it = clamps_.erase(it);
  }
  // A predecessor's clamps on devices this configuration no longer clamps (restart in place).
  if (mss_clamp_ != nullptr) {
    std::set<int> keep;
    for (const auto& [device, c] : clamps_) keep.insert(c.ifindex);
    mss_clamp_->drop_inherited_except(keep);
  }
}

}  // namespace uplinkd::wireguard
