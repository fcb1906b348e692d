// The daemon's side of mwan3's surface: `mwan3 ifup|ifdown <iface>` (and netifd's hotplug events,
// forwarded by uplinkctl hotplug), the figures ubus `mwan3 status` and mwan3's state files carry
// (age, online, offline, uptime, lost, turn, tracking...), and those files, kept current.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include "common/log.h"
#include "daemon/daemon.h"
#include "daemon/link_state.h"

namespace uplinkd {

namespace {

constexpr int64_t kStateSyncNs = 1'000'000'000;  // state files follow each cycle within this

int64_t whole_seconds(int64_t ns) { return ns > 0 ? ns / 1'000'000'000 : 0; }

std::string configured_names(const config::Config& cfg) {
  std::string out;
  for (const auto& i : cfg.interfaces) out += (out.empty() ? "" : ", ") + i.name;
  return out.empty() ? "none" : out;
}

}  // namespace

int64_t Daemon::uptime_s(int64_t monotonic) const { return whole_seconds(monotonic + boot_offset_ns_); }

Daemon::Uplink* Daemon::requested_uplink(const nlohmann::json& request, nlohmann::json* error) {
  const auto it = request.find("interface");
  if (it == request.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
    *error = {{"error", R"(expected "interface": the name of an interface section of )" + config_.file}};
    return nullptr;
  }
  const std::string& name = it->get_ref<const std::string&>();
  const config::InterfaceConfig* cfg = config_.find_interface(name);
  if (cfg == nullptr) {
    *error = {{"error", "unknown interface '" + name.substr(0, 64) + "': " + config_.file + " has " +
                            configured_names(config_)}};
    return nullptr;
  }
  auto u = uplinks_.find(cfg->id);
  if (!cfg->enabled || u == uplinks_.end()) {
    *error = {{"error", "interface " + name + " is disabled in " + config_.file +
                            " (set option enabled '1' and reload)"}};
    return nullptr;
  }
  return &u->second;
}

// mwan3's ifdown: the interface leaves service (its rules, routes and tracker go; `disconnected` if it
// was online, then `ifdown`) and stays out, whatever its device does, until ifup.
nlohmann::json Daemon::admin_ifdown(const nlohmann::json& request) {
  nlohmann::json error;
  Uplink* u = requested_uplink(request, &error);
  if (u == nullptr) return error;
  const bool was_up = u->device_up;
  const std::string was = was_up ? std::string(health::to_string(u->monitor->tracker().state())) : "offline";
  u->admin_down = true;
  admin_down_names_.insert(u->cfg->name);
  save_admin_down();
  if (was_up) bring_down(*u, health::monotonic_ns(), false, "ifdown: out of service until ifup");
  if (!was_up) log::notice("interface " + u->cfg->name + ": ifdown (it was not up): stays out until ifup");
  state_dirty_ = true;
  return {{"interface", u->cfg->name}, {"was", was}, {"state", "offline"}, {"admin_down", true}};
}

// mwan3's ifup: back in service; tracking starts now when the device is up (mwan3's firstconnect,
// with `ifup` and `connected` per initial_state), else when it comes up. An interface that is up
// already keeps its tracker as it is.
nlohmann::json Daemon::admin_ifup(const nlohmann::json& request) {
  nlohmann::json error;
  Uplink* u = requested_uplink(request, &error);
  if (u == nullptr) return error;
  const config::InterfaceConfig& cfg = *u->cfg;
  const std::string device = request.value("device", "");
  if (!device.empty() && device != cfg.device) {
    log::warn("interface " + cfg.name + ": netifd's ifup names device " + device + ", but uplinkd tracks " +
              cfg.device + " (from " + config_.file + " or the network file); set option device");
  }
  u->admin_down = false;
  admin_down_names_.erase(cfg.name);
  save_admin_down();
  state_dirty_ = true;
  nlohmann::json answer = {{"interface", cfg.name}, {"device", cfg.device}, {"admin_down", false}};
  if (u->device_up) {
    answer["state"] = std::string(health::to_string(u->monitor->tracker().state()));
    answer["note"] = "already up: tracking goes on";
    return answer;
  }
  const LinkState link = read_link(cfg.device);
  if (link.ifindex == 0 || !link.up) {
    answer["state"] = "offline";
    answer["note"] = "device " + cfg.device + (link.ifindex == 0 ? " is absent" : " is down") +
                     ": tracking starts when it comes up";
    return answer;
  }
  const int64_t now = health::monotonic_ns();
  u->retry_at = 0;
  bring_up(*u, link.ifindex, now, false);
  if (!u->device_up) {
    answer["state"] = "offline";
    answer["note"] = u->last_error;
    return answer;
  }
  answer["state"] = std::string(health::to_string(u->monitor->tracker().state()));
  return answer;
}

std::string Daemon::admin_down_path() const {
  if (options_.state_dir.empty()) return {};
  return options_.state_dir + "/uplinkd/" + options_.instance + ".ifdown";
}

// One interface name a line; written beside and renamed, so a crash never leaves half a list.
void Daemon::save_admin_down() const {
  const std::string path = admin_down_path();
  if (path.empty()) return;
  if (admin_down_names_.empty()) {
    unlink(path.c_str());
    return;
  }
  mkdir((options_.state_dir + "/uplinkd").c_str(), 0755);
  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::trunc);
  for (const auto& name : admin_down_names_) out << name << "\n";
  out.close();
  if (!out || rename(tmp.c_str(), path.c_str()) != 0) {
    log::warn("cannot record the interfaces out by ifdown in " + path + ": " + strerror(errno) +
              " (a restart would bring them back)");
    unlink(tmp.c_str());
  }
}

void Daemon::load_admin_down() {
  const std::string path = admin_down_path();
  if (path.empty()) return;
  std::ifstream in(path);
  std::string name;
  while (std::getline(in, name)) {
    if (name.empty() || config_.find_interface(name) == nullptr) continue;
    admin_down_names_.insert(name);
    log::notice("interface " + name + ": out by ifdown before the restart; stays out until ifup");
  }
}

void Daemon::note_transition(Uplink& u, health::Action a, int64_t now) {
  if (a == health::Action::Connected) {
    u.online_since = now;
    u.offline_since = 0;
  } else if (a == health::Action::Disconnected) {
    u.online_since = 0;
    u.offline_since = now;
  }
  state_dirty_ = true;
}

// What mwan3's ubus status and state files say of an enabled interface. Seconds are whole, as in
// mwan3track's files; the *_at figures are instants in seconds of system uptime (CLOCK_BOOTTIME).
nlohmann::json Daemon::mwan3_json(const Uplink& u, int64_t now) const {
  const health::UplinkMonitor& m = *u.monitor;
  const bool up = u.device_up;
  const health::State state = m.tracker().state();
  const bool online = up && (state == health::State::Online || state == health::State::Disconnecting);
  std::string tracking = "active";
  if (!up) tracking = "down";
  if (up && u.cfg->track_ip.empty()) tracking = "disabled";  // state follows ifup/ifdown only
  const int64_t last_cycle = m.last_cycle_ns();
  return {{"status", up ? std::string(health::to_string(state)) : "offline"},
          {"hotplug_state", online ? "online" : "offline"},
          {"tracking", tracking},
          {"running", tracking == "active"},
          {"up", up},
          {"uptime", up ? whole_seconds(now - m.running_since_ns()) : 0},
          {"age", last_cycle > 0 ? whole_seconds(now - last_cycle) : 0},
          {"online", u.online_since > 0 ? whole_seconds(now - u.online_since) : 0},
          {"offline", u.offline_since > 0 ? whole_seconds(now - u.offline_since) : 0},
          {"online_at", u.online_since > 0 ? uptime_s(u.online_since) : 0},
          {"offline_at", u.offline_since > 0 ? uptime_s(u.offline_since) : 0},
          {"time", last_cycle > 0 ? uptime_s(last_cycle) : 0},
          {"lost", m.probes_lost()},
          {"turn", m.cycles()}};
}

void Daemon::sync_state_files(int64_t now) {
  state_dirty_ = false;
  next_state_sync_ = now + kStateSyncNs;
  if (state_files_.root().empty()) return;
  state_files_.sync({{"interfaces", interfaces_json(now)}});
}

}  // namespace uplinkd
