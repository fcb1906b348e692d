// mwan3track's scoring and state machine for one uplink, without any I/O: the caller feeds it
// cycle results and ifup/ifdown, and carries out the actions it returns (hook, BPF map, log).
// Semantics follow mwan3 2.12 (../shared/reference/mwan3-behaviour.md section 2 and 3).
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace uplinkd::health {

enum class State { Offline, Connecting, Online, Disconnecting, Disabled };
enum class Action { Connected, Disconnected, Connecting, Disconnecting, Ifup, Ifdown };

std::string_view to_string(State s);
std::string_view to_string(Action a);

// How one target did in one cycle (mwan3: counts up, counts down, or neither with check_quality).
enum class TargetVerdict { Up, Down, Skipped };

struct TrackerParams {
  int reliability = 1;
  int count = 1;
  int down = 5;
  int up = 5;
  double interval_s = 10;
  double failure_interval_s = 10;
  double recovery_interval_s = 10;
  bool keep_failure_interval = false;
  bool check_quality = false;
  int failure_latency_ms = 1000;
  int failure_loss_pct = 40;
  int recovery_latency_ms = 500;
  int recovery_loss_pct = 10;
  bool initial_online = true;
  // nping's rule (mwan3 reads nping's "Lost:" count): a target is up only when every probe of the
  // cycle was answered, not just one.
  bool every_reply_needed = false;
};

// One target's probes in one cycle: `replied` of `sent`, and the mean RTT of the replies.
struct TargetSample {
  int sent = 0;
  int replied = 0;
  double mean_rtt_ms = 0;
};

// Classifies a target's cycle: without check_quality, up when any probe was answered (every probe
// with every_reply_needed);
// with it, mwan3's loss/latency thresholds (loss rounded down to whole percent like ping prints).
TargetVerdict classify(const TargetSample& sample, const TrackerParams& params);

// The outcome of one cycle as mwan3track counts it: targets are taken in list order until
// `reliability` of them are up; `lost` counts the down ones seen before that.
struct CycleResult {
  int host_up_count = 0;
  int lost = 0;
};

// Decides a cycle from per-target verdicts in list order (nullopt = still pending).
// Returns nullopt while the outcome still depends on a pending target.
std::optional<CycleResult> evaluate_cycle(const std::vector<std::optional<TargetVerdict>>& verdicts,
                                          int reliability);

struct Step {
  std::vector<Action> actions;  // hook actions to run, in order
  double sleep_s = 0;           // time until the next cycle starts
};

class Tracker {
 public:
  explicit Tracker(const TrackerParams& params);

  // The device is up (daemon start or ifup): mwan3's firstconnect. Returns `connected` when the
  // initial state is online (mwan3 sends it with FIRSTCONNECT=1), nothing when offline.
  Step start();
  // Continues where a predecessor daemon left off (an adopted datapath): the uplink is in `state`
  // from now on, with no action at all (no hook, nothing for failover to do); only fresh cycle results
  // move it. Online starts with the full score; disconnecting just above the line where the next
  // failed cycle takes it offline, as mwan3 would have it mid-way; offline and connecting from zero.
  Step adopt(State state);
  // A cycle finished.
  Step on_cycle(const CycleResult& result);
  // The device went down or vanished: `disconnected` if the state was online or disconnecting,
  // then the tracker is disabled until start() is called again.
  Step on_device_down();

  [[nodiscard]] State state() const { return state_; }
  [[nodiscard]] int score() const { return score_; }
  [[nodiscard]] int turn() const { return turn_; }
  [[nodiscard]] int lost() const { return lost_; }
  // Online/offline changes since construction (connected and disconnected transitions).
  [[nodiscard]] int transitions() const { return transitions_; }

 private:
  // mwan3's disconnected(): state offline, score 0; `disconnected` only from online or disconnecting.
  void disconnect(Step& step);

  TrackerParams p_;
  State state_ = State::Disabled;
  int score_ = 0;
  int lost_ = 0;
  int turn_ = 0;
  int transitions_ = 0;
};

}  // namespace uplinkd::health
