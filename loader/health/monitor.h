// Health-checks one uplink: plans each cycle's probes, sends them through the ProbeTransport,
// registers each in the BPF outstanding-probe map before it leaves, takes replies from the XDP
// ring buffer, expires timeouts, and feeds cycle results to the mwan3 Tracker.
//
// Scheduling: cycles start at a fixed cadence (the tracker's interval, failure_interval or
// recovery_interval, measured from the previous cycle's start), so a verdict is never later than
// `timeout` after its cycle starts and an outage is declared within down x interval + timeout.
// A cycle's probes go out one after another, spread over the first quarter of min(interval,
// timeout) (a sixteenth of min(interval, timeout_min) with timeout 'auto': cycle_spread_s): never
// all targets at once, and each probe still gets its full timeout.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "health/adaptive_timeout.h"
#include "health/http_probe.h"
#include "health/probe_transport.h"
#include "health/tracker.h"
#include "maps/uplinkd_maps.h"
#include "observability/histogram.h"
#include "observability/history.h"

namespace uplinkd::datapath {
class Datapath;
}

namespace uplinkd::health {

int64_t monotonic_ns();

struct TargetStatus {
  IpAddress ip;
  std::string state = "unknown";  // up | down | skipped | unknown
  double rtt_ms = 0;              // mean over the recent window's replies
  double loss_pct = 0;            // over the recent window
  uint64_t sent = 0;
  uint64_t replied = 0;
  uint64_t lost = 0;
  nlohmann::json rtt_histogram;      // observability::Histogram::json() of every reply's RTT
  std::optional<double> timeout_ms;  // timeout 'auto': the timeout its next probe gets (else nullopt)
};

class UplinkMonitor {
 public:
  // Called for every hook action the tracker emits, in order; `first` marks mwan3's FIRSTCONNECT.
  using ActionHandler = std::function<void(UplinkMonitor&, Action, bool first)>;
  // Called with every decided cycle's outcome (the status page's history).
  using CycleObserver = std::function<void(const observability::CyclePoint&)>;

  UplinkMonitor(const config::InterfaceConfig& cfg, uint32_t mark, datapath::Datapath& dp,
                ActionHandler on_action);
  ~UplinkMonitor();

  // The device is up: start tracking (mwan3 firstconnect); the first cycle begins after `phase_s`.
  // `datapath_id` is the uplink id of the XDP instance on the device (the first uplink that
  // attached to it: mwan3's wan and wan6 share one device and so one XDP program).
  void start(int ifindex, uint32_t datapath_id, double phase_s, int64_t now);
  // As start(), but continuing a predecessor daemon's verdict `state` without any action (Tracker::adopt).
  void adopt(int ifindex, uint32_t datapath_id, double phase_s, int64_t now, State state);
  // The device went down or vanished.
  void stop(int64_t now);
  [[nodiscard]] bool running() const { return running_; }

  void on_reply(const probe_reply_event& event, int64_t now);
  // Sends due probes, expires timed-out ones, starts cycles. Call after draining replies.
  void run(int64_t now);
  // When run() next has something to do (INT64_MAX: nothing scheduled).
  [[nodiscard]] int64_t next_wakeup() const;
  // A descriptor the daemon's loop must watch besides next_wakeup(): readable when an httping
  // exchange can move on (-1: the method needs none).
  [[nodiscard]] int event_fd() const { return http_ ? http_->event_fd() : -1; }

  [[nodiscard]] const config::InterfaceConfig& config() const { return cfg_; }
  [[nodiscard]] uint32_t id() const { return cfg_.id; }
  [[nodiscard]] uint32_t mark() const { return mark_; }
  [[nodiscard]] int ifindex() const { return ifindex_; }
  [[nodiscard]] uint32_t datapath_id() const { return datapath_id_; }
  [[nodiscard]] const Tracker& tracker() const { return tracker_; }
  [[nodiscard]] uint64_t probes_sent() const { return sent_; }
  [[nodiscard]] uint64_t probes_replied() const { return replied_; }
  [[nodiscard]] uint64_t probes_lost() const { return lost_; }
  [[nodiscard]] std::vector<TargetStatus> targets() const;
  [[nodiscard]] double rtt_ms() const;
  [[nodiscard]] double loss_pct() const;
  [[nodiscard]] int64_t state_since_ns() const { return state_since_; }
  [[nodiscard]] int64_t running_since_ns() const { return running_since_; }
  // Cycles begun since the daemon started (mwan3track's TURN), and when the latest began (0: none).
  [[nodiscard]] uint64_t cycles() const { return cycles_started_; }
  [[nodiscard]] int64_t last_cycle_ns() const { return cycle_.start; }
  // The last outage's detection time: from sending its first failed probe to `disconnected`.
  [[nodiscard]] std::optional<double> last_detection_s() const { return last_detection_s_; }
  // How late probes left against their planned time (the loop's own delays show here).
  [[nodiscard]] const observability::Histogram& send_lateness() const { return lateness_; }
  void set_cycle_observer(CycleObserver observer) { cycle_observer_ = std::move(observer); }

 private:
  struct Planned {
    size_t target;
    int64_t send_at;
  };
  struct Cycle {
    uint64_t number = 0;
    int64_t start = 0;
    std::vector<Planned> plan;
    size_t next = 0;
    std::vector<TargetSample> samples;
    std::vector<int> unresolved;  // probes per target not yet answered or expired (incl. unsent)
    std::vector<std::optional<TargetVerdict>> verdicts;
    bool decided = false;
  };
  struct Pending {
    probe_key key{};
    uint64_t cycle = 0;
    size_t target = 0;
    int64_t deadline = 0;
    uint16_t dns_port = 0;
    int64_t sent_at = 0;
    uint64_t http_id = 0;  // httping: the HttpProber exchange (its key is never in the BPF map)
    probe_value value{};   // as registered in the BPF map (re-registered to watch for a late reply)
    // timeout 'auto': the tracker has counted this probe lost; it stays registered until `deadline`
    // (sent + the cap) only so a late reply can still teach the target's AdaptiveTimeout.
    bool late_watch = false;
  };
  struct Window {  // recent results of one target: RTT in ms, or nullopt for a loss
    std::deque<std::optional<double>> results;
    std::string state = "unknown";
    uint64_t sent = 0, replied = 0, lost = 0;
    observability::Histogram rtt{observability::kRttBucketsMs};
    std::optional<AdaptiveTimeout> timeout;  // timeout 'auto' only
  };

  void start(int ifindex, uint32_t datapath_id, double phase_s, int64_t now, std::optional<State> adopted);
  void begin_cycle(int64_t now);
  void send_due(int64_t now);
  void send_one(size_t target, int64_t now);
  void send_http(size_t target, int64_t now);
  void finish_http(int64_t now);
  void release(const Pending& p);
  void expire(int64_t now);
  void resolve(const Pending& p, std::optional<double> rtt_ms, int64_t now);
  // A probe's deadline passed: lost for the tracker; with timeout 'auto', watched a while longer.
  void expire_one(const std::string& key, int64_t now);
  [[nodiscard]] bool may_watch_late(const Pending& p) const;
  // timeout 'auto': the target's estimate moved; probes to it still in flight get the longer of
  // their own deadline and the new timeout (a queue that grew must not fail them too).
  void learn_rtt(size_t target, std::optional<double> rtt_ms);
  // How long a probe to `target` sent now waits for its reply: `timeout`, or the target's estimate.
  [[nodiscard]] int64_t probe_timeout_ns(size_t target) const;
  void try_decide(int64_t now);
  void apply(const Step& step, bool first);
  void forget_pending();
  void note_outcome(const Pending& p, bool replied);
  void observe_cycle(int64_t now);
  [[nodiscard]] std::string key_bytes(const probe_key& key) const;
  [[nodiscard]] uint8_t probe_kind() const;
  [[nodiscard]] int echo_payload_size() const;

  config::InterfaceConfig cfg_;
  uint32_t mark_;
  datapath::Datapath& dp_;
  ActionHandler on_action_;
  Tracker tracker_;
  TrackerParams params_;
  std::unique_ptr<ProbeTransport> transport_;
  std::unique_ptr<HttpProber> http_;  // httping only; lives as long as the monitor (its fd is watched)
  bool running_ = false;
  int ifindex_ = 0;
  uint32_t datapath_id_ = 0;
  Cycle cycle_;
  int64_t next_cycle_at_ = 0;
  std::map<std::string, Pending> pending_;
  std::vector<Window> windows_;
  uint64_t cycles_started_ = 0;
  uint16_t echo_ident_ = 0;
  uint16_t seq_ = 0;
  uint64_t sent_ = 0, replied_ = 0, lost_ = 0;
  int64_t state_since_ = 0;
  int64_t running_since_ = 0;
  State last_state_ = State::Disabled;
  // Detection time: when the first probe of the current run of failures left (0: none failing).
  int64_t first_failure_sent_ = 0;
  std::optional<double> last_detection_s_;
  observability::Histogram lateness_{observability::kLatenessBucketsMs};
  CycleObserver cycle_observer_;
};

}  // namespace uplinkd::health
