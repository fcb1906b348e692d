// The status page's memory: the per-uplink ring (bounded in points and in time, oldest first,
// fixed storage), the last events, and the bridge that hands the loop's snapshots to listener threads.
#include "observability/history.h"

#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "observability/snapshot.h"

namespace uplinkd::observability {
namespace {

constexpr int64_t kS = 1000000000LL;

CyclePoint point(int64_t t_s, PointState state, std::vector<float> rtt) {
  return {t_s * kS, state, 10.0F, std::move(rtt)};
}

TEST(UplinkHistory, KeepsTheNewestPointsOldestFirst) {
  UplinkHistory h(2, 3);
  for (int i = 1; i <= 5; ++i) h.add(point(i, PointState::Online, {static_cast<float>(i), 0.5F}));
  const HistorySeries s = h.series(5 * kS);
  ASSERT_EQ(s.t_ns.size(), 3U);
  EXPECT_EQ(s.t_ns.front(), 3 * kS);
  EXPECT_EQ(s.t_ns.back(), 5 * kS);
  ASSERT_EQ(s.rtt_ms.size(), 2U);
  EXPECT_EQ(s.rtt_ms[0], (std::vector<float>{3, 4, 5}));
  EXPECT_EQ(s.rtt_ms[1], (std::vector<float>{0.5F, 0.5F, 0.5F}));
}

TEST(UplinkHistory, DropsPointsOlderThanItsSpan) {
  UplinkHistory h(1, 100, 10 * kS);
  h.add(point(1, PointState::Offline, {1}));
  h.add(point(20, PointState::Online, {2}));
  const HistorySeries s = h.series(25 * kS);
  ASSERT_EQ(s.t_ns.size(), 1U);
  EXPECT_EQ(s.state.front(), PointState::Online);
}

TEST(UplinkHistory, MissingTargetsAreNaN) {
  UplinkHistory h(2, 4);
  h.add(point(1, PointState::Online, {1}));
  EXPECT_TRUE(std::isnan(h.series(1 * kS).rtt_ms[1][0]));
}

TEST(UplinkHistory, StorageIsFixedAtConstruction) {
  UplinkHistory h(4);
  const size_t bytes = h.memory_bytes();
  EXPECT_EQ(bytes, UplinkHistory::kDefaultCapacity * (8 + 1 + 4 + 4 * 4));
  for (int i = 0; i < 10000; ++i) h.add(point(i, PointState::Online, {1, 2, 3, 4}));
  EXPECT_EQ(h.memory_bytes(), bytes);
  EXPECT_EQ(h.size(), UplinkHistory::kDefaultCapacity);
}

TEST(EventLog, KeepsTheLastEventsNewestFirst) {
  EventLog log(2);
  log.add({1, "notice", "a"});
  log.add({2, "notice", "b"});
  log.add({3, "warning", "c"});
  const auto events = log.recent();
  ASSERT_EQ(events.size(), 2U);
  EXPECT_EQ(events[0].text, "c");
  EXPECT_EQ(events[1].text, "b");
}

TEST(SnapshotBridge, TheLoopAnswersAWaitingRequest) {
  SnapshotBridge bridge;
  std::optional<Snapshot> got;
  std::thread listener([&] { got = bridge.request(SnapshotKind::Metrics, std::chrono::milliseconds(5000)); });
  int served = 0;
  for (int i = 0; i < 500 && !got; ++i) {  // the loop: serve when the eventfd says so
    bridge.serve([&](SnapshotKind kind) {
      ++served;
      Snapshot s;
      s.data = {{"kind", kind == SnapshotKind::Metrics ? "metrics" : "page"}};
      return s;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  listener.join();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->data["kind"], "metrics");
  EXPECT_EQ(served, 1);
}

TEST(SnapshotBridge, NoAnswerInTimeOrClosedGivesNothing) {
  SnapshotBridge bridge;
  EXPECT_FALSE(bridge.request(SnapshotKind::Page, std::chrono::milliseconds(20)));
  bridge.close();
  EXPECT_FALSE(bridge.request(SnapshotKind::Page, std::chrono::milliseconds(2000)));
  bridge.reopen();
  std::thread listener(
      [&] { EXPECT_FALSE(bridge.request(SnapshotKind::Page, std::chrono::milliseconds(5000))); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  bridge.close();  // a waiting request is released at once
  listener.join();
}

TEST(PageData, FromTheStatusJsonAndTheHistory) {
  Snapshot s;
  s.data = nlohmann::json::parse(R"({"version": "0.1.0", "status": {"daemon": {"instance": "lab"},
    "interfaces": [{"name": "wan", "device": "eth1", "state": "offline", "state_s": 4.5, "score": 0,
                    "rtt_ms": 0, "loss_pct": 100, "thresholds": {"failure_latency_ms": 500, "failure_loss_pct": 0},
                    "targets": [{"ip": "203.0.113.1", "state": "down", "rtt_ms": 0, "loss_pct": 100}]}]}})");
  s.history["wan"].t_ns = {1, 2};
  s.events = {{5, "notice", "interface wan (eth1) is offline"}};
  s.now_ns = 3;
  const PageData page = page_data(s, 5);
  EXPECT_EQ(page.instance, "lab");
  EXPECT_EQ(page.version, "0.1.0");
  ASSERT_EQ(page.uplinks.size(), 1U);
  const PageUplink& u = page.uplinks[0];
  EXPECT_EQ(u.state, "offline");
  EXPECT_EQ(u.device, "eth1");
  EXPECT_DOUBLE_EQ(u.loss_pct, 100);
  EXPECT_DOUBLE_EQ(u.failure_latency_ms, 500);
  ASSERT_EQ(u.targets.size(), 1U);
  EXPECT_EQ(u.targets[0].state, "down");
  EXPECT_EQ(u.history.t_ns.size(), 2U);
  EXPECT_EQ(page.events.size(), 1U);
  EXPECT_EQ(page.refresh_s, 5);
}

}  // namespace
}  // namespace uplinkd::observability
