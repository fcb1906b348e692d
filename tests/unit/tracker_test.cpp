// mwan3track's state machine as tables: each row is a sequence of events and the exact actions and
// sleeps mwan3 2.12.2 produces for it (see loader/health/tracker.cpp for the version notes).
#include "health/tracker.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace uplinkd::health {
namespace {

// Events: U start() (ifup), D on_device_down(), and one cycle each for
//   S success (reliability targets up, none lost)    L success with one lost target before them
//   F failure (no target up, one lost)               Q failure with every target skipped (lost 0)
// The trace has one word per event: its actions joined with ',' ('-' for none), '@', the sleep.
struct TrackerCase {
  const char* name;
  TrackerParams params;
  const char* events;
  const char* trace;
  State final_state;
  int final_score;
  int transitions;
};
// ctest lists parameterised tests by this, not by a byte dump of the row.
void PrintTo(const TrackerCase& row, std::ostream* os) { *os << row.name; }

// Distinct intervals so each sleep in a trace says which one mwan3 picked.
constexpr TrackerParams kTimed{.interval_s = 10, .failure_interval_s = 3, .recovery_interval_s = 2};
constexpr TrackerParams kTimedKeep{
    .interval_s = 10, .failure_interval_s = 3, .recovery_interval_s = 2, .keep_failure_interval = true};
constexpr TrackerParams kTimedOffline{
    .interval_s = 10, .failure_interval_s = 3, .recovery_interval_s = 2, .initial_online = false};
constexpr TrackerParams kFast{
    .down = 1, .up = 1, .interval_s = 10, .failure_interval_s = 3, .recovery_interval_s = 2};
constexpr TrackerParams kFractional{
    .down = 2, .up = 2, .interval_s = 0.5, .failure_interval_s = 0.1, .recovery_interval_s = 1.5};
constexpr TrackerParams kReliability2{
    .reliability = 2, .interval_s = 10, .failure_interval_s = 3, .recovery_interval_s = 2};

const TrackerCase kCases[] = {
    {"defaults_offline_after_5_failures_online_after_5_successes", TrackerParams{}, "UFFFFFSSSSS",
     "connected@0 disconnecting@10 -@10 -@10 -@10 disconnected@10 "
     "connecting@10 -@10 -@10 -@10 connected@10",
     State::Online, 10, 2},
    {"intervals_failure_recovery_and_offline", kTimed, "UFFFFFFSSSSSS",
     "connected@0 disconnecting@3 -@3 -@3 -@3 disconnected@3 -@10 "
     "connecting@2 -@2 -@2 -@2 connected@2 -@10",
     State::Online, 10, 2},
    {"keep_failure_interval_while_offline", kTimedKeep, "UFFFFFFFS",
     "connected@0 disconnecting@3 -@3 -@3 -@3 disconnected@3 -@3 -@3 connecting@2", State::Connecting, 1, 1},
    // connected() resets the score to down+up (mwan3 2.12; 2.11 left it at `up`, and the next failure
    // then dropped it to 0 silently while the status stayed online).
    {"failure_right_after_recovery_starts_disconnecting", kTimed, "UFFFFFSSSSSF",
     "connected@0 disconnecting@3 -@3 -@3 -@3 disconnected@3 connecting@2 -@2 -@2 -@2 connected@2 "
     "disconnecting@3",
     State::Disconnecting, 9, 2},
    {"disconnecting_then_recovered_without_going_offline", kTimed, "UFFFFS",
     "connected@0 disconnecting@3 -@3 -@3 -@3 -@10", State::Online, 10, 0},
    // mwan3 leaves its STATUS variable at "disconnecting" after the silent return to online and so
    // sends no second `disconnecting`; we follow the status file (online) and send it each time.
    {"flapping_never_goes_offline", kTimed, "UFSFSFSFS",
     "connected@0 disconnecting@3 -@10 disconnecting@3 -@10 disconnecting@3 -@10 disconnecting@3 -@10",
     State::Online, 10, 0},
    {"four_failures_one_success_repeated_stays_online", kTimed, "UFFFFSFFFFS",
     "connected@0 disconnecting@3 -@3 -@3 -@3 -@10 disconnecting@3 -@3 -@3 -@3 -@10", State::Online, 10, 0},
    // mwan3 2.11 sent `connecting` on a success with lost > 0 below full score; 2.12 only logs it.
    {"success_with_lost_sends_no_connecting", kTimed, "UFL", "connected@0 disconnecting@3 -@10",
     State::Online, 10, 0},
    {"failure_with_only_skipped_targets_counts_as_failure", kTimed, "UQQQQQ",
     "connected@0 disconnecting@3 -@3 -@3 -@3 disconnected@3", State::Offline, 0, 1},
    {"initial_offline_needs_up_successes", kTimedOffline, "USSSSSS",
     "-@0 connecting@2 -@2 -@2 -@2 connected@2 -@10", State::Online, 10, 1},
    {"initial_offline_failures_stay_silent", kTimedOffline, "UFFF", "-@0 -@10 -@10 -@10", State::Offline, 0,
     0},
    // Connecting and failing again: score 0, state stays connecting, no disconnected (mwan3 issue 18087).
    {"connecting_failure_sends_no_disconnected", kTimedOffline, "USSFF", "-@0 connecting@2 -@2 -@10 -@10",
     State::Connecting, 0, 0},
    {"connecting_failure_then_recovery", kTimedOffline, "USSFSSSSS",
     "-@0 connecting@2 -@2 -@10 -@2 -@2 -@2 -@2 connected@2", State::Online, 10, 1},
    {"down_1_up_1_sends_both_events_in_one_cycle", kFast, "UFSF",
     "connected@0 disconnecting,disconnected@3 connecting,connected@2 disconnecting,disconnected@3",
     State::Offline, 0, 3},
    {"fractional_intervals", kFractional, "UFFSSS",
     "connected@0 disconnecting@0.1 disconnected@0.1 connecting@1.5 "
     "connected@1.5 -@0.5",
     State::Online, 4, 2},
    {"reliability_2_success_with_lost", kReliability2, "UFFLS", "connected@0 disconnecting@3 -@3 -@10 -@10",
     State::Online, 10, 0},
    {"device_down_from_online", kTimed, "UD", "connected@0 disconnected@0", State::Disabled, 0, 1},
    {"device_down_from_disconnecting", kTimed, "UFFD", "connected@0 disconnecting@3 -@3 disconnected@0",
     State::Disabled, 0, 1},
    {"device_down_from_offline_is_silent", kTimed, "UFFFFFD",
     "connected@0 disconnecting@3 -@3 -@3 -@3 disconnected@3 -@0", State::Disabled, 0, 1},
    {"device_down_from_connecting_is_silent", kTimedOffline, "USD", "-@0 connecting@2 -@0", State::Disabled,
     0, 0},
    {"disabled_ignores_cycles", kTimed, "UDSF", "connected@0 disconnected@0 -@0 -@0", State::Disabled, 0, 1},
    // ifup after ifdown: firstconnect again. From disabled this is not an offline->online change.
    {"ifup_after_ifdown_reconnects", kTimed, "UDU", "connected@0 disconnected@0 connected@0", State::Online,
     10, 1},
    {"ifup_after_ifdown_with_initial_offline", kTimedOffline, "USSSSSDU",
     "-@0 connecting@2 -@2 -@2 -@2 connected@2 disconnected@0 -@0", State::Offline, 0, 2},
    // ifup while offline with initial_state online: firstconnect sends connected, ending the offline spell.
    {"ifup_while_offline_counts_a_transition", kTimed, "UFFFFFU",
     "connected@0 disconnecting@3 -@3 -@3 -@3 disconnected@3 connected@0", State::Online, 10, 2},
    // firstconnect on a disconnecting uplink with initial_state offline: offline, silently (disconnected 1).
    {"ifup_while_disconnecting_with_initial_offline", kTimedOffline, "USSSSSFU",
     "-@0 connecting@2 -@2 -@2 -@2 connected@2 disconnecting@3 -@0", State::Offline, 0, 2},
    {"ifup_while_online_sends_connected_again", kTimed, "UFU", "connected@0 disconnecting@3 connected@0",
     State::Online, 10, 0},
};

std::string format_sleep(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

std::string describe(const Step& step) {
  std::string word;
  for (Action a : step.actions) {
    if (!word.empty()) {
      word += ",";
    }
    word += to_string(a);
  }
  if (word.empty()) {
    word = "-";
  }
  return word + "@" + format_sleep(step.sleep_s);
}

Step apply(Tracker& t, const TrackerParams& p, char event) {
  switch (event) {
    case 'U':
      return t.start();
    case 'D':
      return t.on_device_down();
    case 'S':
      return t.on_cycle({.host_up_count = p.reliability, .lost = 0});
    case 'L':
      return t.on_cycle({.host_up_count = p.reliability, .lost = 1});
    case 'F':
      return t.on_cycle({.host_up_count = 0, .lost = 1});
    case 'Q':
      return t.on_cycle({.host_up_count = 0, .lost = 0});
  }
  ADD_FAILURE() << "unknown event " << event;
  return {};
}

class TrackerTable : public testing::TestWithParam<TrackerCase> {};

TEST_P(TrackerTable, ActionsSleepsAndFinalState) {
  const TrackerCase& c = GetParam();
  Tracker t(c.params);
  std::string trace;
  for (const char* e = c.events; *e != '\0'; ++e) {
    if (!trace.empty()) {
      trace += " ";
    }
    trace += describe(apply(t, c.params, *e));
  }
  EXPECT_EQ(trace, c.trace) << "events " << c.events;
  EXPECT_EQ(to_string(t.state()), to_string(c.final_state));
  EXPECT_EQ(t.score(), c.final_score);
  EXPECT_EQ(t.transitions(), c.transitions);
}

INSTANTIATE_TEST_SUITE_P(Mwan3, TrackerTable, testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Tracker, StartsDisabledWithNothingCounted) {
  Tracker t(TrackerParams{});
  EXPECT_EQ(t.state(), State::Disabled);
  EXPECT_EQ(t.transitions(), 0);
  t.start();
  EXPECT_EQ(t.state(), State::Online);
  EXPECT_EQ(t.score(), 10);
  EXPECT_EQ(t.transitions(), 0);  // the first start is not a change
}

TEST(Tracker, LostAccumulatesUntilASuccessAndTurnCountsCycles) {
  const TrackerParams p = kTimed;
  Tracker t(p);
  t.start();
  t.on_cycle({.host_up_count = 0, .lost = 1});
  t.on_cycle({.host_up_count = 0, .lost = 2});
  EXPECT_EQ(t.lost(), 3);
  EXPECT_EQ(t.turn(), 2);
  EXPECT_EQ(t.score(), 8);
  t.on_cycle({.host_up_count = 1, .lost = 1});  // success: lost is cleared
  EXPECT_EQ(t.lost(), 0);
  EXPECT_EQ(t.turn(), 3);
  EXPECT_EQ(t.score(), 10);
}

TEST(Tracker, ConnectedResetsTurnAndLost) {
  Tracker t(kTimedOffline);
  t.start();
  for (int i = 0; i < 4; ++i) {
    t.on_cycle({.host_up_count = 1, .lost = 0});
  }
  EXPECT_EQ(t.turn(), 4);
  t.on_cycle({.host_up_count = 1, .lost = 0});  // connected: turn = 0, then the cycle counts
  EXPECT_EQ(t.state(), State::Online);
  EXPECT_EQ(t.turn(), 1);
  EXPECT_EQ(t.lost(), 0);
}

TEST(Tracker, ScoreWalksDownOneStepPerFailure) {
  Tracker t(TrackerParams{});
  t.start();
  std::vector<int> scores;
  std::vector<State> states;
  for (int i = 0; i < 6; ++i) {
    t.on_cycle({.host_up_count = 0, .lost = 1});
    scores.push_back(t.score());
    states.push_back(t.state());
  }
  EXPECT_EQ(scores, (std::vector<int>{9, 8, 7, 6, 0, 0}));
  EXPECT_EQ(states, (std::vector<State>{State::Disconnecting, State::Disconnecting, State::Disconnecting,
                                        State::Disconnecting, State::Offline, State::Offline}));
}

// ---- evaluate_cycle ---------------------------------------------------------------------------

// Verdicts in list order: U up, D down, S skipped, ? pending.
struct CycleCase {
  const char* name;
  const char* verdicts;
  int reliability;
  std::optional<CycleResult> expected;
};
// ctest lists parameterised tests by this, not by a byte dump of the row.
void PrintTo(const CycleCase& row, std::ostream* os) { *os << row.name; }

std::optional<CycleResult> result(int up, int lost) { return CycleResult{.host_up_count = up, .lost = lost}; }

const CycleCase kCycleCases[] = {
    {"all_up_stops_at_reliability", "UUUU", 2, result(2, 0)},
    {"early_success_ignores_pending_after", "UU??", 2, result(2, 0)},
    {"success_counts_down_before_it", "UDU?", 2, result(2, 1)},
    {"down_after_success_not_counted", "UUDD", 2, result(2, 0)},
    {"skipped_is_neither", "DSUU", 2, result(2, 1)},
    {"complete_failure_counts_all", "UDDD", 2, result(1, 3)},
    {"certain_failure_before_last", "DDD?", 2, result(0, 3)},
    {"certain_failure_with_pending_in_front", "?DDD", 2, result(0, 3)},
    {"certain_failure_all_skipped", "SSS?", 2, result(0, 0)},
    {"certain_failure_two_pending_one_up_missing", "D?DD", 2, result(0, 3)},
    {"pending_could_still_succeed", "DD??", 2, std::nullopt},
    {"pending_after_one_up", "U???", 2, std::nullopt},
    {"pending_between", "D?D?", 2, std::nullopt},
    {"later_up_keeps_it_open", "UD?D", 2, std::nullopt},
    // Success is certain but mwan3 would count `lost` from the first target.
    {"success_certain_but_lost_unknown", "?UUU", 2, std::nullopt},
    {"no_targets_fails", "", 2, result(0, 0)},
    {"reliability_1_first_up", "U???", 1, result(1, 0)},
    {"reliability_4_needs_all", "UUU?", 4, std::nullopt},
    {"reliability_4_one_down", "UD??", 4, result(1, 1)},
};

std::vector<std::optional<TargetVerdict>> verdicts_of(const char* s) {
  std::vector<std::optional<TargetVerdict>> out;
  for (; *s != '\0'; ++s) {
    switch (*s) {
      case 'U':
        out.emplace_back(TargetVerdict::Up);
        break;
      case 'D':
        out.emplace_back(TargetVerdict::Down);
        break;
      case 'S':
        out.emplace_back(TargetVerdict::Skipped);
        break;
      default:
        out.emplace_back(std::nullopt);
        break;
    }
  }
  return out;
}

class CycleTable : public testing::TestWithParam<CycleCase> {};

TEST_P(CycleTable, DecidesLikeMwan3) {
  const CycleCase& c = GetParam();
  auto got = evaluate_cycle(verdicts_of(c.verdicts), c.reliability);
  ASSERT_EQ(got.has_value(), c.expected.has_value()) << c.verdicts;
  if (got) {
    EXPECT_EQ(got->host_up_count, c.expected->host_up_count) << c.verdicts;
    EXPECT_EQ(got->lost, c.expected->lost) << c.verdicts;
  }
}

INSTANTIATE_TEST_SUITE_P(Reliability, CycleTable, testing::ValuesIn(kCycleCases),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- classify ---------------------------------------------------------------------------------

struct ClassifyCase {
  const char* name;
  bool check_quality;
  TargetSample sample;
  TargetVerdict expected;
};
// ctest lists parameterised tests by this, not by a byte dump of the row.
void PrintTo(const ClassifyCase& row, std::ostream* os) { *os << row.name; }

// Thresholds: the mwan3 defaults, failure 40 % / 1000 ms, recovery 10 % / 500 ms.
const ClassifyCase kClassifyCases[] = {
    {"plain_one_reply_is_up", false, {.sent = 1, .replied = 1, .mean_rtt_ms = 5000}, TargetVerdict::Up},
    {"plain_any_reply_is_up", false, {.sent = 5, .replied = 1, .mean_rtt_ms = 20}, TargetVerdict::Up},
    {"plain_no_reply_is_down", false, {.sent = 3, .replied = 0}, TargetVerdict::Down},
    {"quality_clean_is_up", true, {.sent = 10, .replied = 10, .mean_rtt_ms = 20}, TargetVerdict::Up},
    {"quality_loss_equal_recovery_is_up",
     true,
     {.sent = 10, .replied = 9, .mean_rtt_ms = 20},
     TargetVerdict::Up},
    {"quality_loss_rounded_down_to_recovery",
     true,
     {.sent = 11, .replied = 10, .mean_rtt_ms = 20},
     TargetVerdict::Up},  // 9.09 % -> 9
    {"quality_loss_between_is_skipped",
     true,
     {.sent = 10, .replied = 8, .mean_rtt_ms = 20},
     TargetVerdict::Skipped},
    {"quality_loss_one_third_is_skipped",
     true,
     {.sent = 3, .replied = 2, .mean_rtt_ms = 20},
     TargetVerdict::Skipped},  // 33 %
    {"quality_loss_just_below_failure",
     true,
     {.sent = 100, .replied = 61, .mean_rtt_ms = 20},
     TargetVerdict::Skipped},  // 39 %
    {"quality_loss_equal_failure_is_down",
     true,
     {.sent = 10, .replied = 6, .mean_rtt_ms = 20},
     TargetVerdict::Down},
    {"quality_latency_equal_recovery_is_up",
     true,
     {.sent = 4, .replied = 4, .mean_rtt_ms = 500.9},
     TargetVerdict::Up},  // 500 ms after rounding down
    {"quality_latency_above_recovery_is_skipped",
     true,
     {.sent = 4, .replied = 4, .mean_rtt_ms = 501},
     TargetVerdict::Skipped},
    {"quality_latency_below_failure_is_skipped",
     true,
     {.sent = 4, .replied = 4, .mean_rtt_ms = 999.99},
     TargetVerdict::Skipped},
    {"quality_latency_equal_failure_is_down",
     true,
     {.sent = 4, .replied = 4, .mean_rtt_ms = 1000},
     TargetVerdict::Down},
    {"quality_no_reply_is_down", true, {.sent = 4, .replied = 0, .mean_rtt_ms = 0}, TargetVerdict::Down},
    {"quality_nothing_sent_is_down", true, {.sent = 0, .replied = 0}, TargetVerdict::Down},
};

class ClassifyTable : public testing::TestWithParam<ClassifyCase> {};

TEST_P(ClassifyTable, Thresholds) {
  const ClassifyCase& c = GetParam();
  TrackerParams p;
  p.check_quality = c.check_quality;
  EXPECT_EQ(classify(c.sample, p), c.expected);
}

INSTANTIATE_TEST_SUITE_P(Mwan3, ClassifyTable, testing::ValuesIn(kClassifyCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Classify, CustomThresholds) {
  TrackerParams p;
  p.check_quality = true;
  p.failure_loss_pct = 20;
  p.recovery_loss_pct = 0;
  p.failure_latency_ms = 100;
  p.recovery_latency_ms = 50;
  EXPECT_EQ(classify({.sent = 5, .replied = 5, .mean_rtt_ms = 50}, p), TargetVerdict::Up);
  EXPECT_EQ(classify({.sent = 5, .replied = 5, .mean_rtt_ms = 51}, p), TargetVerdict::Skipped);
  EXPECT_EQ(classify({.sent = 5, .replied = 5, .mean_rtt_ms = 100}, p), TargetVerdict::Down);
  EXPECT_EQ(classify({.sent = 10, .replied = 9, .mean_rtt_ms = 10}, p), TargetVerdict::Skipped);
  EXPECT_EQ(classify({.sent = 5, .replied = 4, .mean_rtt_ms = 10}, p), TargetVerdict::Down);  // 20 %
}

// nping-udp/icmp/arp: mwan3 reads nping's "Lost:" count and needs it to be 0.
TEST(Classify, NpingNeedsEveryReply) {
  TrackerParams p;
  p.every_reply_needed = true;
  EXPECT_EQ(classify({.sent = 3, .replied = 3}, p), TargetVerdict::Up);
  EXPECT_EQ(classify({.sent = 3, .replied = 2}, p), TargetVerdict::Down);
  EXPECT_EQ(classify({.sent = 1, .replied = 0}, p), TargetVerdict::Down);
  EXPECT_EQ(classify({.sent = 0, .replied = 0}, p), TargetVerdict::Down);
  p.every_reply_needed = false;
  EXPECT_EQ(classify({.sent = 3, .replied = 1}, p), TargetVerdict::Up);
}

TEST(Names, MatchMwan3Words) {
  EXPECT_EQ(to_string(State::Disconnecting), "disconnecting");
  EXPECT_EQ(to_string(State::Disabled), "disabled");
  EXPECT_EQ(to_string(Action::Connected), "connected");
  EXPECT_EQ(to_string(Action::Ifdown), "ifdown");
}

}  // namespace
}  // namespace uplinkd::health
