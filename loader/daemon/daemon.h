// The uplinkd daemon: owns the configuration, the datapath, one UplinkMonitor per enabled
// interface, the per-uplink routes, the hook runner and the control socket, and runs them from
// one epoll loop (no thread, no child process per probe).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.h"
#include "control/control_server.h"
#include "daemon/flow_hygiene.h"
#include "daemon/hook_runner.h"
#include "daemon/link_state.h"
#include "daemon/loop_stats.h"
#include "daemon/policy_runtime.h"
#include "datapath/datapath.h"
#include "datapath/wg_steering.h"
#include "health/monitor.h"
#include "lifecycle/service_notify.h"
#include "mwan3/state_files.h"
#include "netlink/default_route.h"
#include "netlink/route_events.h"
#include "netlink/uplink_routes.h"
#include "observability/history.h"
#include "observability/http_listener.h"
#include "observability/snapshot.h"
#include "pmtu/path_mtu.h"
#include "wireguard/manager.h"

namespace uplinkd::datapath {
class MssClamp;
}

namespace uplinkd {

struct DaemonOptions {
  std::string config_path = "/etc/config/mwan3";
  std::optional<std::string> network_path;
  std::string socket_path = "/var/run/uplinkd.sock";
  std::string instance = "default";
  std::string hook_path;  // empty: none
  std::string bpffs = "/sys/fs/bpf";
  std::string state_dir = "/var/run";  // mwan3's state files under it (mwan3/state_files.h); empty: none
};

class Daemon {
 public:
  // Loads everything; throws (with a message for a person) if anything fails, after undoing
  // what was already done: no half-attached programs, no stray routes.
  Daemon(DaemonOptions options, config::Config config);
  ~Daemon();

  // Runs until SIGTERM or SIGINT (a full stop), `uplinkctl stop [--keep-datapath]`, or `uplinkctl
  // restart` / SIGUSR2. Returns the exit status; exit_action() says what the caller does next.
  int run();

  // What ends run(): a stop (the destructor removes everything, or leaves the datapath forwarding for
  // the next daemon when keep_kernel_state()), or a restart in place (the caller executes the binary
  // again, which adopts what this one leaves).
  enum class ExitAction { Stop, Restart };
  [[nodiscard]] ExitAction exit_action() const { return exit_action_; }

  [[nodiscard]] nlohmann::json status() const;

  // Reads the configuration again from the paths it started with and checks it as --check-config
  // does. A bad one is refused: the error (file:line: option '...': ...) is returned and logged, and
  // nothing changes. A good one is applied in place (see README, "Reload"); `summary` gets the one
  // line that was logged. Returns an empty string on success.
  std::string reload(std::string* summary);

 private:
  // Route copies, connected networks and LAN devices are re-read this often (netlink dumps).
  static constexpr int64_t kPolicyRefreshNs = 2 * 1000000000LL;

  // Logs the configuration's unknown-option warnings not logged before.
  void warn_unknown_options(const config::Config& config);

  struct Uplink {
    const config::InterfaceConfig* cfg = nullptr;
    std::unique_ptr<health::UplinkMonitor> monitor;
    int ifindex = 0;
    bool attached = false;     // holds a reference on the device's XDP attachment
    uint32_t datapath_id = 0;  // uplink id of that attachment
    bool device_up = false;
    uint32_t generation = 0;
    std::string last_error;
    int64_t retry_at = 0;
    std::optional<IpAddress> gateway;  // while device_up: configured or learnt at bring-up
    // The predecessor's verdict when this start adopted its datapath: the uplink continues in that state
    // (no hook, no reset) until fresh probes say otherwise. Cleared once it is brought up.
    std::optional<health::State> adopted_state;
    // `mwan3 ifdown` (or netifd's ifdown): out of service, whatever its device does, until ifup.
    bool admin_down = false;
    // mwan3track's ONLINE and OFFLINE: when it last went online / offline (0: not in that state).
    int64_t online_since = 0;
    int64_t offline_since = 0;
    // Its path MTU, measured while the device is up (daemon_pmtu.cpp); null when pmtu_interval is 0.
    std::unique_ptr<pmtu::PathMtuProber> pmtu;
  };

  void setup_signals();
  void watch_monitor(const health::UplinkMonitor& monitor);
  void start_all();
  void adopt_previous_record(Uplink& u);
  void retire_unconfigured_records();
  void request_exit(ExitAction action, bool keep_datapath);
  [[nodiscard]] nlohmann::json stop_json(const nlohmann::json& request);
  ExitAction exit_action_ = ExitAction::Stop;
  bool exit_requested_ = false;
  lifecycle::ServiceNotify notify_;
  void poll_devices(int64_t now, bool at_start);
  void bring_up(Uplink& u, int ifindex, int64_t now, bool at_start);
  // `why`: what the log says went down ("device is down" by default).
  void bring_down(Uplink& u, int64_t now, bool vanished, const std::string& why = "");
  void on_action(health::UplinkMonitor& m, health::Action a, bool first);
  void write_record(const Uplink& u);
  void dispatch_reply(const probe_reply_event& event);
  int64_t next_wakeup(int64_t now) const;
  void handle_signals(bool* stop);
  nlohmann::json handle_request(const nlohmann::json& request);
  nlohmann::json interface_json(const Uplink& u, int64_t now) const;
  [[nodiscard]] nlohmann::json interfaces_json(int64_t now) const;

  // mwan3's surface (daemon_mwan3.cpp): ifup/ifdown of one interface, the figures mwan3's ubus
  // status and state files carry, and those files.
  [[nodiscard]] nlohmann::json admin_ifup(const nlohmann::json& request);
  [[nodiscard]] nlohmann::json admin_ifdown(const nlohmann::json& request);
  // The uplink of an enabled interface named in the request, or nullptr and `*error` set.
  Uplink* requested_uplink(const nlohmann::json& request, nlohmann::json* error);
  [[nodiscard]] nlohmann::json mwan3_json(const Uplink& u, int64_t now) const;
  void note_transition(Uplink& u, health::Action a, int64_t now);
  void sync_state_files(int64_t now);
  [[nodiscard]] int64_t uptime_s(int64_t monotonic) const;
  // Interfaces out by ifdown, by name: kept in <state_dir>/uplinkd/<instance>.ifdown, so a crash, a
  // respawn or an in-place restart that adopts the datapath keeps them out (a fresh start does not).
  std::set<std::string> admin_down_names_;
  // Unknown-option warnings already logged: a reload repeats only new ones (once per option).
  std::set<std::string> warned_options_;
  [[nodiscard]] std::string admin_down_path() const;
  void load_admin_down();
  void save_admin_down() const;
  mwan3::StateFiles state_files_{""};  // set from options_.state_dir in the constructor
  int64_t boot_offset_ns_ = 0;         // CLOCK_BOOTTIME - CLOCK_MONOTONIC: uptime seconds of an instant
  int64_t next_state_sync_ = 0;
  bool state_dirty_ = true;

  DaemonOptions options_;
  config::Config config_;
  std::unique_ptr<datapath::Datapath> datapath_;
  netlink::UplinkRoutes routes_;
  std::unique_ptr<PolicyRuntime> policy_;  // after datapath_: it detaches before the datapath goes
  // Failover hygiene (flow_hygiene.h): resets, conntrack by mark, failback, the flow sweep.
  std::unique_ptr<FlowHygiene> hygiene_;
  int64_t next_flow_sweep_ = 0;
  void hygiene_on_action(const Uplink& u, health::Action a);
  HookRunner hooks_;
  LoopStats loop_stats_;
  std::map<uint32_t, Uplink> uplinks_;  // by interface id (enabled interfaces only)
  // One XDP attachment per device, shared by the uplinks on it (mwan3's wan and wan6).
  struct DeviceAttachment {
    uint32_t datapath_id = 0;
    int users = 0;
  };
  std::map<int, DeviceAttachment> attachments_;  // by ifindex
  bool attach_device(Uplink& u, int ifindex, bool ethernet);
  void release_device(Uplink& u);
  std::unique_ptr<control::ControlServer> control_;
  int epoll_fd_ = -1;
  int signal_fd_ = -1;
  int timer_fd_ = -1;
  // rtnetlink notifications: routes, addresses, links changed (null when they cannot be had).
  std::unique_ptr<netlink::RouteEvents> route_events_;
  [[nodiscard]] int route_events_fd() const { return route_events_ ? route_events_->fd() : -1; }
  void open_route_events();
  void drain_route_events(int64_t now);
  void retry_bring_up_soon(int64_t now);
  bool wait_for_addresses(Uplink& u, const LinkState& link, int family, int64_t now);
  void wait_for_device(Uplink& u, const std::string& missing, int64_t now);
  void refresh_routing(int64_t now);
  int64_t started_ns_ = 0;
  int64_t next_device_poll_ = 0;
  int64_t next_policy_refresh_ = 0;
  [[nodiscard]] policy::OnlineInterfaces online_interfaces() const;
  [[nodiscard]] std::vector<PolicyRuntime::UplinkView> uplink_views() const;
  bool stopping_ = false;

  // WireGuard endpoints follow the active uplink (daemon_wireguard.cpp). The manager goes before
  // the steering it writes to, and both before the datapath.
  std::unique_ptr<datapath::WgSteering> wg_steering_;
  std::unique_ptr<datapath::MssClamp> mss_clamp_;  // only while some wireguard section has clamp_mss
  std::unique_ptr<wireguard::WireguardManager> wireguard_;
  int64_t next_wireguard_poll_ = 0;
  // wg_steer rides on the uplinks only while wg_endpoints has an endpoint (reconcile_wg_steering):
  // nullopt until the manager's first poll says, meanwhile an uplink keeps what a predecessor left.
  std::optional<bool> wg_steering_wanted_;
  struct WgUplinkDevice {
    int ifindex = 0;
    std::string device;
    bool l3_only = false;
  };
  std::map<uint32_t, WgUplinkDevice> wg_uplink_devices_;  // by uplink id, while its device is up
  void reconcile_wg_steering();
  // Attaches (wanted) or detaches the program on one device; false when the attach failed (logged).
  bool steer_device(const WgUplinkDevice& d, bool wanted);
  void create_wg_steering();
  void start_wireguard();
  void stop_wireguard();
  void wireguard_uplink_up(const Uplink& u, bool ethernet);
  void wireguard_uplink_down(const Uplink& u);
  void wireguard_release_device(int ifindex);
  void update_wireguard();
  void poll_wireguard(int64_t now);
  void create_mss_clamp();

  // Path MTU per uplink (daemon_pmtu.cpp).
  void pmtu_uplink_up(Uplink& u, int64_t now);
  void pmtu_uplink_down(Uplink& u);
  void check_device_mtus(int64_t now);
  void run_pmtu(int64_t now);
  [[nodiscard]] std::optional<int> path_mtu_of(const Uplink& u) const;
  [[nodiscard]] nlohmann::json path_mtu_json(const Uplink& u, int64_t now) const;

  // The metrics listener and the status page (daemon_observability.cpp). The listeners' threads
  // reach the daemon only through the bridge, which the loop serves; history and events are fed
  // from the loop (and events from any thread that logs).
  std::unique_ptr<observability::SnapshotBridge> snapshots_;
  std::vector<std::unique_ptr<observability::HttpListener>> listeners_;
  std::vector<std::string> listener_errors_;
  // By interface id; a ring holds the points of one target list (a reload that changes it starts afresh).
  struct History {
    std::vector<IpAddress> targets;
    observability::UplinkHistory ring;
  };
  std::map<uint32_t, History> histories_;
  observability::EventLog events_;
  void start_observability();
  void stop_observability();
  void start_listeners();
  void stop_listeners();
  void serve_snapshots();
  [[nodiscard]] observability::Snapshot make_snapshot(observability::SnapshotKind kind) const;
  [[nodiscard]] observability::HttpResponse answer_http(const observability::HttpRequest& request);
  void record_cycle(uint32_t id, const std::vector<IpAddress>& targets,
                    const observability::CyclePoint& point);
  [[nodiscard]] nlohmann::json metrics_listener_json() const;
  [[nodiscard]] int snapshots_fd() const { return snapshots_ ? snapshots_->fd() : -1; }

  // Reload and the router's own traffic.
  Uplink make_uplink(const config::InterfaceConfig& cfg);
  void retire_uplink(Uplink& u, int64_t now);
  void retrack_uplink(Uplink& u, const std::string& old_device, int64_t now);
  void update_local_routes();
  [[nodiscard]] nlohmann::json reload_json();
  [[nodiscard]] nlohmann::json interface_info(const nlohmann::json& request) const;
  netlink::LocalDefaultRoute local_routes_;
  std::string local_route_error_;
  // Generations of uplinks a reload removed or re-created: a later uplink with that id continues
  // from there, so flows remembered from before can never look current again.
  std::map<uint32_t, uint32_t> retired_generations_;
};

// Loads the mwan3 configuration and checks it entirely (policies, rules compiled against the devices
// present now), as `uplinkd --check-config`, at start and at reload. Throws config::ConfigError
// naming file, line and option.
config::Config load_checked_config(const std::string& config_path,
                                   const std::optional<std::string>& network_path);

// Checks for the privileges uplinkd needs; returns an empty string or what is missing and how to fix it.
std::string check_privileges();

}  // namespace uplinkd
