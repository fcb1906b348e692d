#include "daemon/daemon.h"

#include <linux/capability.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "config/uci.h"
#include "daemon/device_readiness.h"
#include "daemon/link_state.h"
#include "datapath/mss_clamp.h"
#include "lifecycle/teardown.h"
#include "local_out/output_ruleset.h"
#include "local_out/output_table.h"

namespace uplinkd {
namespace {

constexpr int64_t kShutdownHookNs = 10 * 1000000000LL;  // hooks still queued at stop
// Idle flows and orphaned tcp_seen entries are swept this often, a bounded batch each time.
constexpr int64_t kFlowSweepNs = 10 * 1000000000LL;
constexpr int64_t kFlowSweepSliceGapNs = 100 * 1000000LL;

uint32_t bpf_state(health::State s) {
  switch (s) {
    case health::State::Offline:
      return UPLINK_STATE_OFFLINE;
    case health::State::Connecting:
      return UPLINK_STATE_CONNECTING;
    case health::State::Online:
      return UPLINK_STATE_ONLINE;
    case health::State::Disconnecting:
      return UPLINK_STATE_DISCONNECTING;
    case health::State::Disabled:
      return UPLINK_STATE_DISABLED;
  }
  return UPLINK_STATE_UNKNOWN;
}

double seconds(int64_t ns) { return static_cast<double>(ns) / 1e9; }

}  // namespace

std::string check_privileges() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) return "";  // cannot tell: let the kernel decide
  auto has = [&](int cap) { return (data[cap / 32].effective & (1u << (cap % 32))) != 0; };
  std::string missing;
  if (!has(CAP_NET_ADMIN)) missing += " CAP_NET_ADMIN";
  if (!has(CAP_NET_RAW)) missing += " CAP_NET_RAW";
  if (!has(CAP_SYS_ADMIN) && !has(CAP_BPF)) missing += " CAP_BPF";
  if (missing.empty()) return "";
  return "uplinkd must run as root (missing" + missing +
         "): it loads BPF programs, attaches XDP and sends raw probes";
}

namespace {

// MemTotal from /proc/meminfo, in bytes; 0 when unreadable (the smallest flow table then).
uint64_t mem_total_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  while (in >> key >> kib) {
    if (key == "MemTotal:") return kib * 1024;
    in.ignore(256, '\n');
  }
  return 0;
}

}  // namespace

Daemon::Daemon(DaemonOptions options, config::Config config)
    : options_(std::move(options)), config_(std::move(config)), hooks_(options_.hook_path) {
  state_files_ = mwan3::StateFiles(options_.state_dir);
  warn_unknown_options(config_);
  started_ns_ = health::monotonic_ns();
  timespec boot{};
  clock_gettime(CLOCK_BOOTTIME, &boot);
  boot_offset_ns_ = boot.tv_sec * 1000000000LL + boot.tv_nsec - health::monotonic_ns();
  const uint32_t flow_entries = config::flow_table_entries(config_.globals, mem_total_bytes());
  datapath_ = std::make_unique<datapath::Datapath>(
      options_.bpffs, options_.instance, [this](const probe_reply_event& e) { dispatch_reply(e); },
      flow_entries);
  log::info("flow table: " + std::to_string(flow_entries) + " entries (option flow_table_size)");
  // From here until the start succeeded, a failure must leave a predecessor's datapath exactly as it
  // forwards now: what this start finds identical is claimed, and nothing is removed on the way out.
  lifecycle::set_adopting(datapath_->adopting());
  if (datapath_->adopting()) load_admin_down();
  try {
    start_all();
  } catch (...) {
    if (datapath_->adopting()) lifecycle::set_teardown(lifecycle::Teardown::Keep);
    lifecycle::set_adopting(false);
    throw;
  }
  lifecycle::set_adopting(false);
  datapath_->commit_start();
  notify_.ready("tracking " + std::to_string(uplinks_.size()) + " interface(s)");
}

// Everything after the datapath's maps are there; throws when anything fails (see the constructor).
void Daemon::start_all() {
  // The control socket first: of what can fail, binding it is the likeliest, and it changes nothing
  // the datapath uses. Requests are answered from run() on.
  control_ = std::make_unique<control::ControlServer>(
      options_.socket_path, [this](const nlohmann::json& r) { return handle_request(r); },
      control::access_from(config_.globals));
  policy::OnlineInterfaces adopted_online;
  for (const auto& cfg : config_.interfaces) {
    if (!cfg.enabled) continue;
    Uplink& u = uplinks_.emplace(cfg.id, make_uplink(cfg)).first->second;
    adopt_previous_record(u);
    if (u.adopted_state == health::State::Online || u.adopted_state == health::State::Disconnecting)
      adopted_online.insert(cfg.name);
  }
  // Policies start with the members the predecessor had online, so new flows keep their uplinks too.
  policy_ = std::make_unique<PolicyRuntime>(config_, *datapath_, adopted_online);
  hygiene_ = std::make_unique<FlowHygiene>(config_, *datapath_,
                                           FlowHygiene::Options{ct_mark_table_name(options_.instance)});
  // After the ct mark table, which saves the marks this table gives to the connections. Without it
  // (a kernel without nft route or nat chains) everything else still works: logged, not fatal.
  const std::string output_table = local_out::output_table_name(options_.instance);
  try {
    if (config_.globals.local_rules) {
      policy_->enable_output_table(output_table);
    } else {
      local_out::OutputTable::remove_leftover(output_table);
    }
  } catch (const std::exception& e) {
    log::error("installing nft table inet " + output_table +
               " (the router's own traffic through every rule): " + e.what() +
               "; the router's own traffic follows only uplinkd's default route");
  }
  retire_unconfigured_records();
  // An adopted uplink's record stays as its predecessor wrote it until bring-up rewrites the same:
  // writing `disabled` now would make every flow on it stale for an instant.
  for (auto& [id, u] : uplinks_) {
    if (!u.adopted_state) write_record(u);
  }
  create_wg_steering();
  // Devices present now must attach, or the start fails as a whole (destructors undo the rest).
  poll_devices(started_ns_, true);
  // Test-only fault injection (tests/integration/test_restart.sh): a start that fails after the
  // programs were replaced in place must still leave the datapath forwarding.
  if (const char* injected = std::getenv("UPLINKD_TEST_FAIL_START");
      injected != nullptr && *injected != '\0') {
    throw std::runtime_error(std::string("injected failure after attaching (UPLINKD_TEST_FAIL_START=") +
                             injected + "); unset it to start");
  }
  policy_->publish(online_interfaces());
  policy_->refresh(uplink_views());
  update_local_routes();
  start_wireguard();
  next_policy_refresh_ = started_ns_ + kPolicyRefreshNs;
  start_observability();
  setup_signals();
  start_listeners();
}

// The predecessor's record of this uplink, when its maps were adopted: its generation continues (flows
// remembered before stay current) and, when the device is the one it knew, its state too.
void Daemon::adopt_previous_record(Uplink& u) {
  const std::optional<uplink_record> previous = datapath_->previous_record(u.cfg->id);
  if (!previous) return;
  u.generation = std::max(u.generation, previous->generation);
  if (previous->mark != u.monitor->mark()) {
    ++u.generation;  // the id means another mark now: nothing remembered for it is valid
    return;
  }
  const LinkState link = read_link(u.cfg->device);
  if (previous->ifindex == 0 || static_cast<int>(previous->ifindex) != link.ifindex) {
    if (previous->ifindex != 0) ++u.generation;  // its device was re-created while no daemon ran
    return;
  }
  switch (previous->state) {
    case UPLINK_STATE_ONLINE:
      u.adopted_state = health::State::Online;
      break;
    case UPLINK_STATE_DISCONNECTING:
      u.adopted_state = health::State::Disconnecting;
      break;
    case UPLINK_STATE_CONNECTING:
      u.adopted_state = health::State::Connecting;
      break;
    case UPLINK_STATE_OFFLINE:
      u.adopted_state = health::State::Offline;
      break;
    default:
      break;
  }
}

// Uplinks the predecessor had that this configuration does not enable (it changed while no daemon
// ran): retired as a reload would retire them, so their flows are stale and move.
void Daemon::retire_unconfigured_records() {
  for (uint32_t id = 1; id < UPLINKD_MAX_UPLINKS; ++id) {
    if (uplinks_.count(id) != 0) continue;
    const std::optional<uplink_record> previous = datapath_->previous_record(id);
    if (!previous || previous->state == UPLINK_STATE_DISABLED) continue;
    uplink_record r{};
    r.state = UPLINK_STATE_DISABLED;
    r.generation = previous->generation + 1;
    r.mark = previous->mark;
    datapath_->write_uplink(id, r);
    retired_generations_[id] = r.generation;
    log::notice("uplink id " + std::to_string(id) +
                " of the previous daemon is not an enabled interface of " + config_.file +
                " any more: its flows move");
  }
}

Daemon::~Daemon() {
  const int64_t now = health::monotonic_ns();
  stopping_ = true;
  stop_observability();  // the listeners' threads go before anything they could ask about
  if (lifecycle::keep_kernel_state()) {
    // A restart or a stop that keeps the datapath: no uplink goes offline, nothing is removed; the
    // hooks already queued still run.
    notify_.stopping();
    hooks_.drain(now + kShutdownHookNs);
    for (int fd : {epoll_fd_, signal_fd_, timer_fd_}) {
      if (fd >= 0) close(fd);
    }
    return;  // members go in keep mode: programs, pins, rules, routes and nft tables stay
  }
  notify_.stopping();
  stop_wireguard();            // endpoint routes put back while the uplinks' routes still exist
  local_routes_.remove_all();  // the system's own default routes apply again from here
  for (auto& [id, u] : uplinks_) {
    if (u.device_up) u.monitor->stop(now);  // `disconnected` for the online ones, as mwan3 at stop
    release_device(u);
  }
  hooks_.drain(now + kShutdownHookNs);
  state_files_.remove_all();         // mwan3 removes its tracker's files when it stops
  if (!admin_down_path().empty()) {  // the next start is a fresh one: every interface comes up
    unlink(admin_down_path().c_str());
    rmdir((options_.state_dir + "/uplinkd").c_str());  // only if empty (another instance's list stays)
  }
  uplinks_.clear();
  hygiene_.reset();  // its nft table goes
  policy_.reset();
  routes_.remove_all();
  control_.reset();
  datapath_.reset();
  for (int fd : {epoll_fd_, signal_fd_, timer_fd_}) {
    if (fd >= 0) close(fd);
  }
}

void Daemon::setup_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR2}) sigaddset(&set, s);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  signal_fd_ = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (signal_fd_ < 0 || timer_fd_ < 0 || epoll_fd_ < 0)
    throw std::runtime_error(std::string("event loop: ") + strerror(errno));
  open_route_events();
  for (int fd :
       {signal_fd_, timer_fd_, datapath_->ring_fd(), control_->fd(), route_events_fd(), snapshots_fd()}) {
    if (fd < 0) continue;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  for (auto& [id, u] : uplinks_) watch_monitor(*u.monitor);
}

// httping's exchanges wake the loop through the monitor's own epoll descriptor; it leaves the set
// by itself when the monitor (and so the descriptor) goes. Before setup_signals there is no set yet.
void Daemon::watch_monitor(const health::UplinkMonitor& monitor) {
  if (epoll_fd_ < 0 || monitor.event_fd() < 0) return;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = monitor.event_fd();
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, monitor.event_fd(), &ev);
}

void Daemon::on_action(health::UplinkMonitor& m, health::Action a, bool first) {
  auto it = uplinks_.find(m.id());
  if (it == uplinks_.end()) return;
  Uplink& u = it->second;
  const config::InterfaceConfig& cfg = m.config();
  if (a == health::Action::Disconnected) ++u.generation;  // every flow pinned to it is stale from now
  // Measured at bring-up while it could not reach its targets: measure now that it can.
  if (a == health::Action::Connected && u.pmtu &&
      u.pmtu->result().state != pmtu::PathMtuProber::Result::State::Measured)
    u.pmtu->request(health::monotonic_ns());
  note_transition(u, a, health::monotonic_ns());
  const std::string verb = a == health::Action::Connected      ? "online"
                           : a == health::Action::Disconnected ? "offline"
                                                               : std::string(health::to_string(a));
  log::notice("interface " + cfg.name + " (" + cfg.device + ") is " + verb);
  write_record(u);
  // Membership follows mwan3's hotplug events: a member counts from `connected` to `disconnected`.
  if (policy_ && !stopping_ && (a == health::Action::Connected || a == health::Action::Disconnected)) {
    policy_->publish(online_interfaces());
    update_local_routes();
    update_wireguard();
  }
  // mwan3 sends the `disconnected` of its shutdown with an empty DEVICE.
  hygiene_on_action(u, a);
  hooks_.enqueue(std::string(health::to_string(a)), cfg.name, stopping_ ? "" : cfg.device, first);
}

void Daemon::write_record(const Uplink& u) {
  uplink_record r{};
  r.ifindex = u.device_up ? static_cast<uint32_t>(u.ifindex) : 0;
  r.state =
      u.device_up ? bpf_state(u.monitor->tracker().state()) : static_cast<uint32_t>(UPLINK_STATE_DISABLED);
  r.generation = u.generation;
  r.mark = u.monitor->mark();
  if (u.cfg->icmp_limit_rate > 0) {
    r.icmp_limit_interval_ns = 1000000000ULL / u.cfg->icmp_limit_rate;
    r.icmp_limit_burst = u.cfg->icmp_limit_burst;
  }
  datapath_->write_uplink(u.cfg->id, r);
}

policy::OnlineInterfaces Daemon::online_interfaces() const {
  policy::OnlineInterfaces online;
  for (const auto& [id, u] : uplinks_) {
    const health::State s = u.monitor->tracker().state();
    if (u.device_up && (s == health::State::Online || s == health::State::Disconnecting))
      online.insert(u.cfg->name);
  }
  return online;
}

std::vector<PolicyRuntime::UplinkView> Daemon::uplink_views() const {
  std::vector<PolicyRuntime::UplinkView> views;
  for (const auto& [id, u] : uplinks_) {
    views.push_back({id, u.cfg->device, u.cfg->family == config::Family::Ipv6 ? AF_INET6 : AF_INET,
                     u.device_up ? u.ifindex : 0});
  }
  return views;
}

void Daemon::dispatch_reply(const probe_reply_event& event) {
  // Uplinks sharing a device share its XDP instance's id; each monitor ignores keys it did not send.
  const int64_t now = health::monotonic_ns();
  for (auto& [id, u] : uplinks_) {
    if (!u.device_up || u.datapath_id != event.key.uplink_id) continue;
    u.monitor->on_reply(event, now);
    if (u.pmtu) u.pmtu->on_reply(event, now);
  }
}

int64_t Daemon::next_wakeup(int64_t now) const {
  int64_t t = std::min({next_device_poll_, next_policy_refresh_, next_flow_sweep_});
  for (const auto& [id, u] : uplinks_) {
    t = std::min(t, u.monitor->next_wakeup());
    if (u.pmtu) t = std::min(t, u.pmtu->next_wakeup());
  }
  t = std::min(t, hooks_.next_deadline());
  if (hygiene_ && hygiene_->scanning()) t = now;  // a stale-flow scan goes on, a slice per turn
  return std::max(t, now);
}

int Daemon::run() {
  log::notice("started: " + std::to_string(uplinks_.size()) + " tracked interface(s), control socket " +
              options_.socket_path + ", maps in " + datapath_->pin_dir());
  bool stop = false;
  epoll_event events[16];
  // systemd's watchdog is petted from this loop, so a loop that hangs is restarted.
  const int64_t watchdog_ns = notify_.watchdog_interval_ns();
  const int epoll_timeout_ms =
      watchdog_ns > 0 ? static_cast<int>(std::clamp<int64_t>(watchdog_ns / 2 / 1000000, 10, 1000)) : 1000;
  while (!stop && !exit_requested_) {
    int64_t now = health::monotonic_ns();
    const int64_t wake = next_wakeup(now);
    itimerspec its{};
    const int64_t at = std::max<int64_t>(wake, 1);
    its.it_value.tv_sec = at / 1000000000;
    its.it_value.tv_nsec = at % 1000000000;
    timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr);
    int n = epoll_wait(epoll_fd_, events, 16, epoll_timeout_ms);
    const int64_t turn_start = health::monotonic_ns();
    const int64_t turn_cpu_start = thread_cpu_ns();
    if (n < 0 && errno != EINTR) {
      log::error(std::string("epoll_wait: ") + strerror(errno));
      return 1;
    }
    LoopPartTimer part(loop_stats_, health::monotonic_ns);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == signal_fd_) handle_signals(&stop);
      if (fd == control_->fd()) control_->serve();
      if (fd == route_events_fd()) drain_route_events(health::monotonic_ns());
      if (fd == snapshots_fd()) serve_snapshots();
      if (fd == timer_fd_) {
        uint64_t ticks;
        [[maybe_unused]] ssize_t r = read(timer_fd_, &ticks, sizeof ticks);
      }
    }
    part.mark("events");
    // Replies first, so a reply that raced its timeout is counted as a reply.
    datapath_->poll_replies();
    now = health::monotonic_ns();
    for (auto& [id, u] : uplinks_) u.monitor->run(now);
    part.mark("probes");
    run_pmtu(now);
    if (now >= next_device_poll_) poll_devices(now, false);
    if (now >= next_policy_refresh_) refresh_routing(now);
    part.mark("devices_routes");
    poll_wireguard(now);
    part.mark("wireguard");
    if (now >= next_flow_sweep_) {
      // A pass goes on in slices 0.1 s apart (a million flows: about half a minute), then rests.
      next_flow_sweep_ = now + (hygiene_->sweep(now) ? kFlowSweepNs : kFlowSweepSliceGapNs);
    }
    part.mark("flow_sweep");
    if (hygiene_->scanning()) hygiene_->continue_scans(now, FlowHygiene::kScanSliceNs);
    part.mark("stale_scan");
    hooks_.service(now);
    if (state_dirty_ || now >= next_state_sync_) sync_state_files(now);
    notify_.watchdog(now);
    part.mark("hooks_state");
    loop_stats_.add_turn(health::monotonic_ns() - turn_start, thread_cpu_ns() - turn_cpu_start);
  }
  if (exit_action_ == ExitAction::Restart) {
    log::notice("restarting in place: the datapath keeps forwarding while the binary is executed again");
    notify_.reloading();
  } else if (lifecycle::keep_kernel_state()) {
    log::notice("stopping; the datapath keeps forwarding for the next daemon (stop --keep-datapath)");
  } else {
    log::notice("stopping");
  }
  return 0;
}

// `uplinkctl stop [--keep-datapath]`, `uplinkctl restart`, SIGUSR2: the loop ends after this wake-up
// (the answer goes out first). Keeping the datapath is decided now, so nothing on the way out undoes it.
void Daemon::request_exit(ExitAction action, bool keep_datapath) {
  exit_requested_ = true;
  exit_action_ = action;
  if (keep_datapath || action == ExitAction::Restart) lifecycle::set_teardown(lifecycle::Teardown::Keep);
}

nlohmann::json Daemon::stop_json(const nlohmann::json& request) {
  const bool keep = request.value("keep_datapath", false);
  request_exit(ExitAction::Stop, keep);
  return {{"stopping", true}, {"keep_datapath", keep}, {"pid", getpid()}};
}

void Daemon::handle_signals(bool* stop) {
  signalfd_siginfo si{};
  while (read(signal_fd_, &si, sizeof si) == sizeof si) {
    switch (si.ssi_signo) {
      case SIGINT:
      case SIGTERM:
        *stop = true;
        break;
      case SIGHUP: {
        std::string summary;
        log::notice("SIGHUP: reloading " + options_.config_path);
        reload(&summary);  // logs the outcome either way
        break;
      }
      case SIGCHLD:
        hooks_.service(health::monotonic_ns());
        break;
      case SIGUSR2:
        log::notice("SIGUSR2: restarting in place");
        request_exit(ExitAction::Restart, true);
        break;
    }
  }
}

nlohmann::json Daemon::handle_request(const nlohmann::json& request) {
  const std::string command = request.value("command", "");
  if (command == "status" || command == "interfaces") return status();
  if (command == "policies") return {{"policies", policy_->policies_json()}};
  if (command == "rules") return {{"rules", policy_->rules_json()}};
  if (command == "connected") return {{"connected", policy_->connected_json()}};
  if (command == "flows") return {{"flows", hygiene_->counters_json()}};
  if (command == "reload") return reload_json();
  if (command == "interface_info") return interface_info(request);
  if (command == "ifup") return admin_ifup(request);
  if (command == "ifdown") return admin_ifdown(request);
  if (command == "stop") return stop_json(request);
  if (command == "restart") {
    request_exit(ExitAction::Restart, true);
    return {{"restarting", true}, {"pid", getpid()}};
  }
  if (command == "wireguard")
    return {{"wireguard", wireguard_ ? wireguard_->json() : nlohmann::json::object()}};
  return {{"error", "unknown command '" + command +
                        "' (known: status, interfaces, policies, rules, connected, flows, wireguard, reload, "
                        "interface_info, ifup, ifdown, stop, restart)"}};
}

nlohmann::json Daemon::interface_json(const Uplink& u, int64_t now) const {
  const health::UplinkMonitor& m = *u.monitor;
  const auto counters = datapath_->counters(u.datapath_id != 0 ? u.datapath_id : u.cfg->id);
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& t : m.targets()) {
    targets.push_back({{"ip", t.ip.str()},
                       {"state", t.state},
                       {"rtt_ms", t.rtt_ms},
                       {"loss_pct", t.loss_pct},
                       {"sent", t.sent},
                       {"replied", t.replied},
                       {"lost", t.lost},
                       {"rtt_histogram", t.rtt_histogram}});
    // timeout 'auto' only: the timeout the target's next probe gets, as its RTTs have taught it.
    if (t.timeout_ms) targets.back()["timeout_ms"] = *t.timeout_ms;
  }
  const bool tracking = u.device_up;
  std::string state = tracking ? std::string(health::to_string(m.tracker().state())) : "offline";
  return {
      {"name", u.cfg->name},
      {"id", u.cfg->id},
      {"device", u.cfg->device},
      {"enabled", true},
      {"tracking", tracking},
      {"device_state", u.ifindex != 0 || u.device_up ? (u.device_up ? "up" : "down") : "absent"},
      {"state", state},
      {"score", m.tracker().score()},
      {"transitions", m.tracker().transitions()},
      {"state_s", tracking ? seconds(now - m.state_since_ns()) : 0.0},
      {"uptime_s", tracking ? seconds(now - m.running_since_ns()) : 0.0},
      {"mark", u.monitor->mark()},
      {"generation", u.generation},
      {"xdp_mode", datapath_->attach_mode(u.datapath_id)},
      {"last_error", u.last_error},
      {"probes", {{"sent", m.probes_sent()}, {"replied", m.probes_replied()}, {"lost", m.probes_lost()}}},
      {"rtt_ms", m.rtt_ms()},
      {"loss_pct", m.loss_pct()},
      {"detection_s", m.last_detection_s() ? nlohmann::json(*m.last_detection_s()) : nlohmann::json(nullptr)},
      {"path_mtu", path_mtu_json(u, now)},
      {"probe_lateness", m.send_lateness().json()},
      {"thresholds",
       {{"failure_latency_ms", u.cfg->check_quality ? u.cfg->failure_latency_ms : 0},
        {"failure_loss_pct", u.cfg->check_quality ? u.cfg->failure_loss_pct : 0}}},
      {"admin_down", u.admin_down},
      {"mwan3", mwan3_json(u, now)},
      {"datapath",
       {{"probe_replies", counters.probe_replies},
        {"nonce_mismatch", counters.nonce_mismatch},
        {"ringbuf_full", counters.ringbuf_full},
        {"icmp_passed", counters.icmp_passed},
        {"icmp_dropped", counters.icmp_dropped},
        {"probe_replies_exempted", counters.probe_replies_exempted}}},
      {"targets", targets}};
}

nlohmann::json Daemon::interfaces_json(int64_t now) const {
  nlohmann::json interfaces = nlohmann::json::array();
  for (const auto& cfg : config_.interfaces) {
    auto it = uplinks_.find(cfg.id);
    if (it != uplinks_.end()) {
      interfaces.push_back(interface_json(it->second, now));
    } else {
      interfaces.push_back({{"name", cfg.name},
                            {"id", cfg.id},
                            {"device", cfg.device},
                            {"enabled", false},
                            {"tracking", false},
                            {"state", "disabled"},
                            {"score", 0},
                            {"transitions", 0},
                            {"probes", {{"sent", 0}, {"replied", 0}, {"lost", 0}}},
                            {"rtt_ms", 0.0},
                            {"loss_pct", 0.0},
                            {"mwan3",
                             {{"status", "disabled"},
                              {"tracking", "disabled"},
                              {"running", false},
                              {"up", false},
                              {"hotplug_state", "offline"}}},
                            {"targets", nlohmann::json::array()}});
    }
  }
  return interfaces;
}

nlohmann::json Daemon::status() const {
  const int64_t now = health::monotonic_ns();
  const nlohmann::json interfaces = interfaces_json(now);
  return {{"policies", policy_->policies_json()},
          {"rules", policy_->rules_json()},
          {"connected", policy_->connected_json()},
          {"daemon",
           {{"pid", getpid()},
            {"instance", options_.instance},
            {"uptime_s", seconds(now - started_ns_)},
            {"config", config_.file},
            {"metrics_listener", metrics_listener_json()},
            {"loop", loop_stats_.json()}}},
          {"interfaces", interfaces}};
}

// ---- reload and the router's own traffic -------------------------------------------------------

namespace {

int family_of(const config::InterfaceConfig& cfg) {
  return cfg.family == config::Family::Ipv6 ? AF_INET6 : AF_INET;
}

// True when a monitor built for `a` would probe exactly as one built for `b`: such an uplink keeps its
// monitor, tracker state and hook history across a reload. The ICMP limiter is not part of it
// (rewritten in the uplink record in place), nor are options uplinkd does not use.
bool same_tracking(const config::InterfaceConfig& a, const config::InterfaceConfig& b) {
  return a.name == b.name && a.id == b.id && a.enabled == b.enabled && a.family == b.family &&
         a.track_ip == b.track_ip && a.track_method == b.track_method && a.reliability == b.reliability &&
         a.count == b.count && a.timeout_s == b.timeout_s && a.timeout_auto == b.timeout_auto &&
         a.interval_s == b.interval_s && a.failure_interval_s == b.failure_interval_s &&
         a.recovery_interval_s == b.recovery_interval_s &&
         a.keep_failure_interval == b.keep_failure_interval && a.down == b.down && a.up == b.up &&
         a.size == b.size && a.max_ttl == b.max_ttl && a.check_quality == b.check_quality &&
         a.failure_latency_ms == b.failure_latency_ms && a.failure_loss_pct == b.failure_loss_pct &&
         a.recovery_latency_ms == b.recovery_latency_ms && a.recovery_loss_pct == b.recovery_loss_pct &&
         a.initial_state == b.initial_state && a.device == b.device && a.gateway == b.gateway &&
         a.track_port == b.track_port && a.dns_query_name == b.dns_query_name &&
         a.httping_ssl == b.httping_ssl;
}

const config::InterfaceConfig* enabled_interface(const config::Config& cfg, uint32_t id) {
  for (const auto& i : cfg.interfaces) {
    if (i.id == id && i.enabled) return &i;
  }
  return nullptr;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out.empty() ? "none" : out;
}

}  // namespace

config::Config load_checked_config(const std::string& config_path,
                                   const std::optional<std::string>& network_path) {
  config::Config config = config::load(config_path, network_path);
  policy::check_policy_limits(config);
  std::ifstream in(config_path);
  std::stringstream text;
  text << in.rdbuf();
  // With the parsed source the compiler names the option's own line, not the rule's header.
  const config::uci::Package source = config::uci::parse(text.str(), config_path);
  policy::compile_rules(
      config, policy::assign_policy_ids(config),
      [](const std::string& device) { return if_nametoindex(device.c_str()); }, &source);
  return config;
}

Daemon::Uplink Daemon::make_uplink(const config::InterfaceConfig& cfg) {
  Uplink u;
  u.cfg = &cfg;
  u.admin_down = admin_down_names_.count(cfg.name) != 0;
  if (auto it = retired_generations_.find(cfg.id); it != retired_generations_.end())
    u.generation = it->second;
  const uint32_t mark = config::mark_for_id(cfg.id, config_.globals.mmx_mask);
  u.monitor = std::make_unique<health::UplinkMonitor>(
      cfg, mark, *datapath_,
      [this](health::UplinkMonitor& m, health::Action a, bool first) { on_action(m, a, first); });
  watch_monitor(*u.monitor);
  // By value: a reload keeps this monitor only while its targets stay the same, and replaces config_.
  u.monitor->set_cycle_observer([this, id = cfg.id, targets = cfg.track_ip](
                                    const observability::CyclePoint& p) { record_cycle(id, targets, p); });
  return u;
}

// An uplink a reload removes, disables or re-creates: tracked no more, its routes and table copies
// gone, and every flow it carried stale (its generation moves on, and stays moved for a successor).
void Daemon::retire_uplink(Uplink& u, int64_t now) {
  const config::InterfaceConfig& cfg = *u.cfg;
  if (u.device_up) {
    u.monitor->stop(now);  // `disconnected` first when it was online, as at stop
    pmtu_uplink_down(u);
    hooks_.enqueue("ifdown", cfg.name, "", false);
    routes_.remove(cfg.id, family_of(cfg));
    policy_->uplink_down({cfg.id, cfg.device, family_of(cfg), 0});
  }
  release_device(u);
  u.device_up = false;
  u.gateway.reset();
  ++u.generation;
  retired_generations_[cfg.id] = u.generation;
  write_record(u);
}

// An uplink whose id, mark and family stay but whose probing changed (targets, timings, device...):
// a new monitor, started at once when its device is up. No `disconnected` and no generation bump, so
// its established flows keep going; with initial_state online (the default) it is online again at
// once, with `connected` as at a start.
void Daemon::retrack_uplink(Uplink& u, const std::string& old_device, int64_t now) {
  const config::InterfaceConfig& cfg = *u.cfg;
  const bool was_up = u.device_up;
  if (cfg.device != old_device) {
    if (u.device_up) routes_.remove(cfg.id, family_of(cfg));
    if (u.device_up) policy_->uplink_down({cfg.id, old_device, family_of(cfg), 0});
    release_device(u);
    u.ifindex = 0;
  }
  const uint32_t generation = u.generation;
  Uplink fresh = make_uplink(cfg);  // the old monitor goes with its outstanding probes
  u.monitor = std::move(fresh.monitor);
  u.generation = generation;
  u.device_up = false;
  u.retry_at = 0;
  const LinkState link = read_link(cfg.device);
  // Straight to bring-up, without writing a `down` record in between that would make its flows stale.
  if (link.ifindex != 0 && link.up) {
    bring_up(u, link.ifindex, now, false);
  } else {
    if (was_up) u.gateway.reset();
    write_record(u);
  }
}

void Daemon::warn_unknown_options(const config::Config& config) {
  for (const std::string& w : config.warnings) {
    if (warned_options_.insert(w).second) log::warn(w);
  }
}

std::string Daemon::reload(std::string* summary) {
  config::Config next;
  PolicyRuntime::Compiled compiled;
  try {
    next = load_checked_config(options_.config_path, options_.network_path);
    compiled = PolicyRuntime::compile(next);
  } catch (const std::exception& e) {
    log::error(std::string("reload refused, the running configuration stays: ") + e.what());
    return e.what();
  }
  warn_unknown_options(next);
  const int64_t now = health::monotonic_ns();
  std::vector<std::string> kept, retracked, added, changed, removed;
  std::vector<uint32_t> retrack;
  for (auto it = uplinks_.begin(); it != uplinks_.end();) {
    Uplink& u = it->second;
    const config::InterfaceConfig* n = enabled_interface(next, it->first);
    const bool same_slot = n != nullptr && n->name == u.cfg->name && family_of(*n) == family_of(*u.cfg) &&
                           config::mark_for_id(n->id, next.globals.mmx_mask) == u.monitor->mark();
    if (same_slot && same_tracking(*u.cfg, *n)) {
      ++it;
      continue;
    }
    if (same_slot) {  // same id, mark and family: only how it is probed changed; its flows stay valid
      retrack.push_back(it->first);
      retracked.push_back(u.cfg->name);
      ++it;
      continue;
    }
    (n != nullptr ? changed : removed).push_back(u.cfg->name);
    retire_uplink(u, now);
    it = uplinks_.erase(it);
  }
  // Kept uplinks point into the old configuration until they are moved over just below.
  const config::Config old = std::move(config_);
  config_ = std::move(next);
  control_->set_access(control::access_from(config_.globals));
  if (old.globals.metrics_listen != config_.globals.metrics_listen) {
    stop_listeners();
    start_listeners();
  }
  for (auto& [id, u] : uplinks_) {
    const std::string old_device = u.cfg->device;
    u.cfg = enabled_interface(config_, id);
    if (std::find(retrack.begin(), retrack.end(), id) != retrack.end()) {
      retrack_uplink(u, old_device, now);
    } else {
      kept.push_back(u.cfg->name);
      write_record(u);  // the ICMP limiter may have changed
    }
  }
  for (const auto& cfg : config_.interfaces) {
    if (!cfg.enabled || uplinks_.count(cfg.id) != 0) continue;
    auto [it, inserted] = uplinks_.emplace(cfg.id, make_uplink(cfg));
    write_record(it->second);
    if (std::find(changed.begin(), changed.end(), cfg.name) == changed.end()) added.push_back(cfg.name);
  }
  if (config_.globals.local_rules != old.globals.local_rules) {
    log::warn("reload: option local_rules takes effect at the next start; `uplinkctl restart` applies it");
  }
  if (config_.globals.probe_reply_mark != old.globals.probe_reply_mark ||
      config_.globals.probe_reply_mark_mask != old.globals.probe_reply_mark_mask) {
    log::warn(
        "reload: probe_reply_mark applies to devices attached from now on; restart uplinkd to apply "
        "it to the uplinks already attached");
  }
  const std::string problems = policy_->reload(config_, std::move(compiled), online_interfaces());
  poll_devices(now, false);  // new and re-created uplinks whose device is there start now
  policy_->refresh(uplink_views());
  next_policy_refresh_ = now + kPolicyRefreshNs;
  update_local_routes();
  hygiene_->reconfigure();  // the ct-mark rules follow the interfaces and mmx_mask
  wireguard_.reset();       // endpoint routes put back, then fixed again under the new policies
  start_wireguard();
  const std::string line = "reloaded " + config_.file + ": interfaces kept " + joined(kept) + ", retracked " +
                           joined(retracked) + ", added " + joined(added) + ", changed " + joined(changed) +
                           ", removed " + joined(removed) + "; " + std::to_string(config_.policies.size()) +
                           " policies, " + std::to_string(config_.rules.size()) + " rules";
  log::notice(line);
  if (!problems.empty()) log::error("reload: " + problems);
  if (summary != nullptr) *summary = line + (problems.empty() ? "" : "; kernel: " + problems);
  return "";
}

nlohmann::json Daemon::reload_json() {
  std::string summary;
  const std::string error = reload(&summary);
  if (!error.empty()) return {{"error", "reload refused, the running configuration stays: " + error}};
  return {{"reloaded", true}, {"summary", summary}};
}

// What `uplinkctl use` needs to send by one uplink: its device and mark, and whether it is usable.
nlohmann::json Daemon::interface_info(const nlohmann::json& request) const {
  const std::string name = request.value("interface", "");
  const config::InterfaceConfig* cfg = config_.find_interface(name);
  if (cfg == nullptr) {
    std::vector<std::string> names;
    for (const auto& i : config_.interfaces) names.push_back(i.name);
    return {{"error", "unknown interface '" + name + "' (" + config_.file + " has " + joined(names) + ")"}};
  }
  auto it = uplinks_.find(cfg->id);
  if (!cfg->enabled || it == uplinks_.end()) {
    return {{"error", "interface " + name + " is disabled in " + config_.file + " (option enabled '1')"}};
  }
  const Uplink& u = it->second;
  const std::string state =
      u.device_up ? std::string(health::to_string(u.monitor->tracker().state())) : "offline";
  if (!u.device_up) {
    return {{"error", "interface " + name + " is offline: its device " + cfg->device + " is absent or down"}};
  }
  const health::State s = u.monitor->tracker().state();
  if (s != health::State::Online && s != health::State::Disconnecting) {
    return {{"error", "interface " + name + " is " + state + ", not online: nothing would leave by it"}};
  }
  return {{"name", name},
          {"device", cfg->device},
          {"ifindex", u.ifindex},
          {"mark", u.monitor->mark()},
          {"mmx_mask", config_.globals.mmx_mask},
          {"state", state},
          {"family", cfg->family == config::Family::Ipv6 ? "ipv6" : "ipv4"}};
}

// The main table's default route follows the default rule's policy (see default_route.h).
void Daemon::update_local_routes() {
  if (stopping_ || !policy_) return;
  std::string errors;
  for (int family : {AF_INET, AF_INET6}) {
    std::vector<netlink::LocalDefaultRoute::Hop> hops;
    if (config_.globals.local_route) {
      for (const auto& m : policy_->default_route_members(family)) {
        auto it = uplinks_.find(m.id);
        if (it == uplinks_.end() || !it->second.device_up) continue;
        hops.push_back({it->second.ifindex, it->second.gateway, m.weight});
      }
    }
    const auto before = local_routes_.hops(family);
    std::string error;
    if (local_routes_.set(family, config_.globals.local_route_metric, hops, &error) != 0) {
      errors += error;
    } else if (before != hops) {
      log::info(hops.empty()
                    ? std::string(family == AF_INET ? "IPv4" : "IPv6") +
                          " default route of uplinkd removed: the system's routes apply"
                    : "router's own traffic: " +
                          netlink::describe_default_route(family, config_.globals.local_route_metric, hops));
    }
  }
  if (!errors.empty() && errors != local_route_error_) log::error(errors);
  local_route_error_ = errors;
}

// ---- failover hygiene -----------------------------------------------------------------------------

// Runs after the generation bump, the uplink record write and the policy republish of on_action, so
// every flow of a dead uplink is stale before its clients are reset. Not at stop: a restart must
// not reset every connection of the LAN.
void Daemon::hygiene_on_action(const Uplink& u, health::Action a) {
  if (!hygiene_ || stopping_) return;
  const int64_t now = health::monotonic_ns();
  const uint32_t mark = u.monitor->mark();
  if (a == health::Action::Disconnected) {
    hygiene_->on_disconnected(u.cfg->id, mark, u.generation, now);
    hygiene_->on_event(u.cfg->id, mark, "disconnected");
  } else if (a == health::Action::Connected) {
    hygiene_->on_connected(u.cfg->id, online_interfaces(), now);
    hygiene_->on_event(u.cfg->id, mark, "connected");
  }
}

}  // namespace uplinkd
