// mwan3track's state machine, read from mwan3 2.12.2 (openwrt/packages net/mwan3, PKG_VERSION 2.12.2:
// usr/sbin/mwan3track after commits 1f6bd672 "refactoring mwan3track action handling" and 5f0461be
// "reset score to up+down on connected"). Older mwan3 (2.11.x) differs in two places, noted below.
//
// mwan3track keeps the state twice: a shell variable STATUS, which connecting() and disconnecting()
// compare against, and the status file, which `mwan3 status`, ubus and disconnected() read. They only
// disagree after a successful cycle brings a disconnecting uplink back to online: mwan3 then writes
// "online" to the file but leaves STATUS at "disconnecting", so the next failed cycle sends no
// disconnecting event and leaves the file at "online". Users and scripts see the file; we keep one
// state, equal to the file, and therefore send `disconnecting` again on that next failure.
#include "health/tracker.h"

#include <cmath>
#include <cstddef>

namespace uplinkd::health {

std::string_view to_string(State s) {
  switch (s) {
    case State::Offline:
      return "offline";
    case State::Connecting:
      return "connecting";
    case State::Online:
      return "online";
    case State::Disconnecting:
      return "disconnecting";
    case State::Disabled:
      return "disabled";
  }
  return "?";
}

std::string_view to_string(Action a) {
  switch (a) {
    case Action::Connected:
      return "connected";
    case Action::Disconnected:
      return "disconnected";
    case Action::Connecting:
      return "connecting";
    case Action::Disconnecting:
      return "disconnecting";
    case Action::Ifup:
      return "ifup";
    case Action::Ifdown:
      return "ifdown";
  }
  return "?";
}

namespace {

// What mwan3 uses for a target without any reply under check_quality.
constexpr int kNoReplyLatencyMs = 999999;
constexpr int kNoReplyLossPct = 100;

}  // namespace

TargetVerdict classify(const TargetSample& sample, const TrackerParams& params) {
  if (!params.check_quality) {
    const bool up =
        params.every_reply_needed ? sample.sent > 0 && sample.replied >= sample.sent : sample.replied > 0;
    return up ? TargetVerdict::Up : TargetVerdict::Down;
  }

  int loss = kNoReplyLossPct;
  int latency = kNoReplyLatencyMs;
  if (sample.sent > 0 && sample.replied > 0) {
    // ping prints the loss as a whole percentage rounded down and the average RTT as "avg.fff ms";
    // mwan3 reads the integer parts.
    loss = (100 * (sample.sent - sample.replied)) / sample.sent;
    latency = static_cast<int>(std::floor(sample.mean_rtt_ms));
  }
  if (loss >= params.failure_loss_pct || latency >= params.failure_latency_ms) {
    return TargetVerdict::Down;
  }
  if (loss <= params.recovery_loss_pct && latency <= params.recovery_latency_ms) {
    return TargetVerdict::Up;
  }
  return TargetVerdict::Skipped;  // between the thresholds: neither up nor down
}

// mwan3 probes the targets one after another and stops once `reliability` have answered, so a verdict
// only matters while fewer than `reliability` earlier targets are up. We probe concurrently and
// decide as soon as the answer cannot change:
//   - walking in list order, `reliability` Ups before any pending target: success; targets after the
//     last needed Up do not count (mwan3 never probes them), even when pending;
//   - a pending target before that point: wait, unless even all pending and later Up targets together
//     cannot reach `reliability`. Then the cycle has failed already; mwan3 would have probed every
//     target, so host_up_count and lost count all resolved verdicts (pending ones are not known).
//     A success that is certain but whose `lost` still depends on a pending target also waits.
std::optional<CycleResult> evaluate_cycle(const std::vector<std::optional<TargetVerdict>>& verdicts,
                                          int reliability) {
  CycleResult r;
  for (size_t i = 0; i < verdicts.size(); ++i) {
    if (r.host_up_count >= reliability) {
      break;
    }
    if (!verdicts[i]) {
      int possible_ups = r.host_up_count;
      CycleResult resolved;
      for (size_t j = 0; j < verdicts.size(); ++j) {
        const auto& v = verdicts[j];
        if (j >= i && (!v || *v == TargetVerdict::Up)) {
          ++possible_ups;
        }
        if (v == TargetVerdict::Up) {
          ++resolved.host_up_count;
        }
        if (v == TargetVerdict::Down) {
          ++resolved.lost;
        }
      }
      if (possible_ups < reliability) {
        return resolved;
      }
      return std::nullopt;
    }
    if (*verdicts[i] == TargetVerdict::Up) {
      ++r.host_up_count;
    }
    if (*verdicts[i] == TargetVerdict::Down) {
      ++r.lost;
    }
  }
  return r;
}

Tracker::Tracker(const TrackerParams& params) : p_(params) {}

Step Tracker::start() {
  Step step;
  // firstconnect: an uplink that is online stays online; otherwise initial_state decides.
  const bool online = state_ == State::Online || p_.initial_online;
  if (online) {
    // connected 1 (FIRSTCONNECT=1): counts as a transition only when it ends an offline spell.
    if (state_ == State::Offline || state_ == State::Connecting) {
      ++transitions_;
    }
    state_ = State::Online;
    score_ = p_.down + p_.up;
    lost_ = 0;
    turn_ = 0;
    step.actions.push_back(Action::Connected);
  } else {
    // disconnected 1: offline without an event (a disconnecting uplink still counts as leaving online).
    if (state_ == State::Disconnecting) {
      ++transitions_;
    }
    state_ = State::Offline;
    score_ = 0;
  }
  step.sleep_s = 0;  // the first cycle starts right away
  return step;
}

Step Tracker::adopt(State state) {
  Step step;
  state_ = state;
  lost_ = 0;
  turn_ = 0;
  switch (state) {
    case State::Online:
      score_ = p_.down + p_.up;
      break;
    case State::Disconnecting:
      score_ = p_.up + 1;
      break;
    case State::Offline:
    case State::Connecting:
    case State::Disabled:
      score_ = 0;
      break;
  }
  if (state == State::Disabled) return start();  // nothing to continue: a normal first connect
  step.sleep_s = 0;
  return step;
}

Step Tracker::on_cycle(const CycleResult& result) {
  Step step;
  if (state_ == State::Disabled) {
    return step;  // mwan3 does not probe until the next ifup
  }
  auto emit = [&step](Action a) { step.actions.push_back(a); };

  // disconnecting(): only when not already disconnecting.
  auto disconnecting = [&] {
    if (state_ == State::Disconnecting) {
      return;
    }
    state_ = State::Disconnecting;
    emit(Action::Disconnecting);
  };
  auto connecting = [&] {
    if (state_ == State::Connecting) {
      return;
    }
    state_ = State::Connecting;
    emit(Action::Connecting);
  };

  lost_ += result.lost;
  step.sleep_s = p_.interval_s;
  const int full = p_.down + p_.up;

  if (result.host_up_count < p_.reliability) {
    --score_;
    if (score_ < p_.up) {
      // Already offline (or connecting and failing again: the state stays, as in mwan3).
      score_ = 0;
      if (p_.keep_failure_interval) {
        step.sleep_s = p_.failure_interval_s;
      }
    } else if (score_ == p_.up) {
      disconnecting();
      step.sleep_s = p_.failure_interval_s;
      disconnect(step);
    } else {
      disconnecting();
      step.sleep_s = p_.failure_interval_s;
    }
  } else {
    // mwan3 2.11 also sent `connecting` here when score < down+up and lost > 0 (an online uplink that
    // had failed a few cycles); 2.12 only logs "Lost N ping(s)".
    ++score_;
    lost_ = 0;
    if (score_ < p_.up) {
      connecting();
      step.sleep_s = p_.recovery_interval_s;
    } else if (score_ == p_.up) {
      connecting();
      step.sleep_s = p_.recovery_interval_s;
      // connected(): score back to down+up (2.11 left it at `up`, so one failure right after a
      // recovery dropped the score to 0 without ever sending disconnected).
      if (state_ == State::Offline || state_ == State::Connecting) {
        ++transitions_;
      }
      state_ = State::Online;
      score_ = full;
      lost_ = 0;
      turn_ = 0;
      emit(Action::Connected);
    } else {
      // Back to (or still) online, no event: mwan3 only rewrites the status file.
      state_ = State::Online;
      score_ = full;
    }
  }
  ++turn_;
  return step;
}

Step Tracker::on_device_down() {
  Step step;
  disconnect(step);
  state_ = State::Disabled;
  return step;
}

// disconnected(): offline with score 0; the event only when the status was online or disconnecting.
void Tracker::disconnect(Step& step) {
  if (state_ == State::Online || state_ == State::Disconnecting) {
    step.actions.push_back(Action::Disconnected);
    ++transitions_;
  }
  state_ = State::Offline;
  score_ = 0;
}

}  // namespace uplinkd::health
