// What the status page plots and lists: per uplink, one point per probe cycle over the last hour
// (a bounded ring), and the daemon's last events. Both live in memory only; their cost is fixed
// when they are made (README, "Status page").
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace uplinkd::observability {

// The uplink's state after a cycle, as the page shades it.
enum class PointState : uint8_t { Online, Offline, Connecting, Disconnecting, Unknown };

// One probe cycle's outcome: per target the mean RTT of its replies (NaN: no reply or not probed),
// and the share of the cycle's resolved probes that were lost.
struct CyclePoint {
  int64_t t_ns = 0;  // CLOCK_MONOTONIC when the cycle was decided
  PointState state = PointState::Unknown;
  float loss_pct = 0;
  std::vector<float> rtt_ms;  // one per target, in track_ip order
};

// A copy of one ring, oldest first, for rendering away from the daemon's loop.
struct HistorySeries {
  std::vector<int64_t> t_ns;
  std::vector<PointState> state;
  std::vector<float> loss_pct;
  std::vector<std::vector<float>> rtt_ms;  // [target][point]
};

// A ring of cycle points of one uplink: at most `capacity` points and none older than `span_ns`.
// Memory: capacity x (8 + 1 + 4 + 4 x targets) bytes, allocated once.
class UplinkHistory {
 public:
  static constexpr size_t kDefaultCapacity = 3600;
  static constexpr int64_t kDefaultSpanNs = 3600LL * 1000000000LL;

  explicit UplinkHistory(size_t targets, size_t capacity = kDefaultCapacity,
                         int64_t span_ns = kDefaultSpanNs);

  void add(const CyclePoint& point);
  // The points no older than span_ns before `now_ns`, oldest first.
  [[nodiscard]] HistorySeries series(int64_t now_ns) const;
  [[nodiscard]] size_t size() const { return size_; }
  [[nodiscard]] size_t targets() const { return targets_; }
  [[nodiscard]] size_t capacity() const { return capacity_; }
  // Bytes held by the ring's storage (what the README states per uplink).
  [[nodiscard]] size_t memory_bytes() const;

 private:
  size_t targets_;
  size_t capacity_;
  int64_t span_ns_;
  size_t head_ = 0;  // next slot written
  size_t size_ = 0;
  std::vector<int64_t> t_ns_;
  std::vector<PointState> state_;
  std::vector<float> loss_pct_;
  std::vector<float> rtt_ms_;  // capacity x targets, slot-major
};

// One line of the page's "last events": a state change, a reset, a WireGuard move...
struct Event {
  int64_t unix_ms = 0;  // wall clock, for a person
  std::string level;    // notice | warning | error
  std::string text;
};

// The last `capacity` events; safe to add from any thread (the conntrack worker logs too).
class EventLog {
 public:
  static constexpr size_t kDefaultCapacity = 50;
  explicit EventLog(size_t capacity = kDefaultCapacity) : capacity_(capacity) {}

  void add(Event event);
  // Newest first.
  [[nodiscard]] std::vector<Event> recent() const;

 private:
  size_t capacity_;
  mutable std::mutex mutex_;
  std::deque<Event> events_;
};

}  // namespace uplinkd::observability
