// `option timeout 'auto'`: RTT sequences and the timeouts they yield (RFC 6298's estimator with a
// floor and a cap, the cap before the first reply; losses are not samples). Expected values were worked out
// by hand from the RFC's formulas (with the cap before the first reply): SRTT = R, RTTVAR = R/2 on the first
// sample, then RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R| and SRTT = 7/8 SRTT + 1/8 R; timeout = clamp(SRTT + 4
// RTTVAR, floor, cap).
#include "health/adaptive_timeout.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace uplinkd::health {
namespace {

constexpr std::optional<double> kLost = std::nullopt;

// A floor low enough that the shape of the estimate shows (the default is 50 ms).
constexpr AdaptiveTimeoutBounds kOpen{0.001, 1.0};
constexpr AdaptiveTimeoutBounds kDefault{};

std::vector<std::optional<double>> repeat(std::optional<double> ms, int n) {
  return std::vector<std::optional<double>>(static_cast<size_t>(n), ms);
}

std::vector<std::optional<double>> join(std::initializer_list<std::vector<std::optional<double>>> parts) {
  std::vector<std::optional<double>> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Feeds RTTs in ms (nullopt: a lost probe) and returns the timeout in ms after each.
std::vector<double> timeouts_ms(const AdaptiveTimeoutBounds& bounds,
                                const std::vector<std::optional<double>>& rtts) {
  AdaptiveTimeout t(bounds);
  std::vector<double> out;
  for (const auto& r : rtts) {
    t.on_result(r ? std::optional<double>(*r / 1e3) : std::nullopt);
    out.push_back(t.timeout_s() * 1e3);
  }
  return out;
}

struct Row {
  std::string name;
  AdaptiveTimeoutBounds bounds;
  std::vector<std::optional<double>> rtts_ms;
  double final_timeout_ms;
};

TEST(AdaptiveTimeout, RttSequencesAndTheirTimeouts) {
  const Row rows[] = {
      // 20 x 10 ms: SRTT 10, RTTVAR 5 x (3/4)^19 = 0.0211 -> 10.0846 ms.
      {"steady", kOpen, repeat(10, 20), 10.084566},
      // The same with the default floor: 50 ms.
      {"steady_at_floor", kDefault, repeat(10, 20), 50},
      // Queue delay rising 10 ms per probe, 10 to 100 ms: the estimate runs ahead of the ramp.
      {"rising_queue", kOpen, {10, 20, 30, 40, 50, 60, 70, 80, 90, 100}, 222.199696},
      // A 200 ms spike in 10 ms: the timeout leaps, then decays back over 20 samples.
      {"spike_then_calm", kOpen, join({repeat(10, 20), {200}, repeat(10, 20)}), 24.793573},
      // Jitter between 10 and 30 ms: SRTT ~20, RTTVAR ~10.
      {"jitter", kOpen, join({{10, 30, 10, 30, 10, 30, 10, 30, 10, 30, 10, 30, 10, 30, 10,
                               30, 10, 30, 10, 30, 10, 30, 10, 30, 10, 30, 10, 30, 10, 30}}),
       63.254608},
      // A LAN-like 1 ms path: the floor.
      {"floor", kDefault, repeat(1, 20), 50},
      // 2 s RTTs: the cap.
      {"cap", kDefault, repeat(2000, 5), 1000},
      // Three replies among losses: the three samples 10, 10, 10 only (SRTT 10, RTTVAR 2.8125).
      {"losses_not_fed", kOpen, join({{10, kLost, 10, kLost, kLost, 10}, repeat(kLost, 10)}), 21.25},
      // Two replies: SRTT 10, RTTVAR 3/4 x 5 = 3.75.
      {"two_replies", kOpen, {10, 10}, 25},
      // Only losses: the cap, for ever.
      {"never_answered", kDefault, repeat(kLost, 30), 1000},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    const auto t = timeouts_ms(row.bounds, row.rtts_ms);
    ASSERT_EQ(t.size(), row.rtts_ms.size());
    EXPECT_NEAR(t.back(), row.final_timeout_ms, 1e-4);
  }
}

TEST(AdaptiveTimeout, CapUntilTheFirstReply) {
  const auto t = timeouts_ms(kOpen, {kLost, kLost, 10, kLost, 10, 10, 10});
  EXPECT_EQ(t[0], 1000);
  EXPECT_EQ(t[1], 1000);
  EXPECT_NEAR(t[2], 30, 1e-9);  // first reply: 10 + 4 x 5
  EXPECT_NEAR(t[3], 30, 1e-9);  // a loss changes nothing
  EXPECT_NEAR(t[4], 25, 1e-9);
  EXPECT_NEAR(t[5], 21.25, 1e-9);
  EXPECT_NEAR(t[6], 18.4375, 1e-9);
  // A first reply at idle: 3 x 0.1 ms, so the floor at once.
  EXPECT_NEAR(timeouts_ms(kDefault, {0.1}).back(), 50, 1e-9);
}

TEST(AdaptiveTimeout, RisingQueueNeverOutrunsTheTimeout) {
  // From an idle lab path (0.2 ms) a queue filling 15 ms per probe to 120 ms, then wobbling as a
  // download's queue does: every next RTT is within the timeout before it.
  std::vector<std::optional<double>> rtts = {0.2, 0.2, 0.2, 0.2};
  for (int ms = 15; ms <= 120; ms += 15) rtts.emplace_back(ms);
  for (double ms : {120, 110, 100, 120}) rtts.emplace_back(ms);
  const auto t = timeouts_ms(kDefault, rtts);
  for (size_t i = 2; i + 1 < rtts.size(); ++i) {
    SCOPED_TRACE("probe " + std::to_string(i + 1));
    EXPECT_GT(t[i], *rtts[i + 1]);
  }
  EXPECT_NEAR(t[3], 50, 1e-9);  // idle: the floor
}

TEST(AdaptiveTimeout, SteepRiseLosesOneProbeThatItsLateReplyRepairs) {
  // 20 ms per probe from idle outruns the estimate once (59.6 ms against a 60 ms RTT): that probe
  // is lost to the tracker, and its late reply (60 ms) puts the next timeout well above 80 ms.
  std::vector<std::optional<double>> rtts = {0.2, 0.2, 0.2, 0.2, 20, 40};
  const auto before = timeouts_ms(kDefault, rtts);
  EXPECT_NEAR(before.back(), 59.610, 1e-3);
  rtts.emplace_back(60);  // the late reply
  EXPECT_GT(timeouts_ms(kDefault, rtts).back(), 100);
}

TEST(AdaptiveTimeout, JitterStaysInsideTheTimeout) {
  std::vector<std::optional<double>> rtts;
  rtts.reserve(40);
  for (int i = 0; i < 40; ++i) rtts.emplace_back(i % 2 == 0 ? 10 : 30);
  const auto t = timeouts_ms(kOpen, rtts);
  for (size_t i = 2; i + 1 < rtts.size(); ++i) EXPECT_GT(t[i], *rtts[i + 1]) << "probe " << i + 1;
}

TEST(AdaptiveTimeout, SpikeRaisesThenDecays) {
  const auto t = timeouts_ms(kOpen, join({repeat(10, 20), {200}, repeat(10, 20)}));
  EXPECT_LT(t[19], 11);
  // RTTVAR 0.0211 x 3/4 + 190/4 = 47.516, SRTT 10 + 190/8 = 33.75: 223.81 ms.
  EXPECT_NEAR(t[20], 223.813, 1e-3);
  for (size_t i = 21; i < t.size(); ++i) EXPECT_LT(t[i], t[i - 1]);
}

TEST(AdaptiveTimeout, LateReplyTeachesAJumpAboveTheTimeout) {
  // Idle at the floor, then the queue jumps to 150 ms at once: the first such probe is lost to the
  // tracker, but its late reply is a sample, and the next probe's timeout covers the new delay.
  AdaptiveTimeout t(kDefault);
  for (int i = 0; i < 10; ++i) t.on_result(0.0002);
  EXPECT_DOUBLE_EQ(t.timeout_s(), 0.05);
  t.on_result(0.150);  // what UplinkMonitor feeds from a reply that came after its timeout
  EXPECT_GT(t.timeout_s(), 0.150);
}

TEST(AdaptiveTimeout, NoMeasurementIsIgnored) {
  AdaptiveTimeout t(kOpen);
  for (int i = 0; i < 5; ++i) t.on_result(0.010);
  const double before = t.timeout_s();
  t.on_result(-0.001);
  t.on_result(std::numeric_limits<double>::quiet_NaN());
  t.on_result(std::numeric_limits<double>::infinity());
  t.on_result(std::nullopt);
  EXPECT_EQ(t.samples(), 5U);
  EXPECT_DOUBLE_EQ(t.timeout_s(), before);
}

TEST(AdaptiveTimeout, FloorAboveCapMeansTheFloor) {
  // The configuration refuses timeout_min > timeout_max; the unit still never returns below the floor.
  AdaptiveTimeout t({0.2, 0.1});
  for (int i = 0; i < 5; ++i) t.on_result(0.001);
  EXPECT_DOUBLE_EQ(t.timeout_s(), 0.2);
}

// A failed cycle lasts its spread plus its last probe's timeout, so an outage's detection pays the
// spread `down` times: with timeout 'auto' it is a sixteenth of min(interval, timeout_min); fixed
// timeouts keep a quarter of min(interval, timeout).
TEST(CycleSpread, FixedTimeoutsKeepAQuarter) {
  EXPECT_DOUBLE_EQ(cycle_spread_s(0.05, 0.05, std::nullopt), 0.0125);
  EXPECT_DOUBLE_EQ(cycle_spread_s(10, 4, std::nullopt), 1.0);
  EXPECT_DOUBLE_EQ(cycle_spread_s(0.05, 1, std::nullopt), 0.0125);
}

TEST(CycleSpread, AutoTimeoutSpreadsOverASixteenthOfTheFloor) {
  // timeout 'auto' at the defaults; the fixed timeout (timeout_max) plays no part.
  EXPECT_DOUBLE_EQ(cycle_spread_s(0.05, 1.0, AdaptiveTimeoutBounds{0.05, 1.0}), 0.003125);
  EXPECT_DOUBLE_EQ(cycle_spread_s(10, 1.0, AdaptiveTimeoutBounds{0.05, 1.0}),
                   0.003125);  // the floor bounds it
  EXPECT_DOUBLE_EQ(cycle_spread_s(0.05, 1.0, AdaptiveTimeoutBounds{0.2, 1.0}),
                   0.003125);  // the interval does
  EXPECT_DOUBLE_EQ(cycle_spread_s(1, 1.0, AdaptiveTimeoutBounds{0.2, 1.0}), 0.0125);
}

}  // namespace
}  // namespace uplinkd::health
