// How long each turn of the daemon's loop keeps it from its probes: the time from epoll_wait's return
// to the next epoll_wait, in wall time and in the thread's CPU time. Probes are sent from the loop, so a long
// turn makes them late; this says whether one ever was (status --json "daemon"."loop";
// bench/failover_scale.sh reads it).
#pragma once

#include <time.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "observability/histogram.h"

namespace uplinkd {

inline constexpr double kLoopBusyBucketsMs[] = {0.1, 0.5, 1, 2, 5, 10, 20, 50, 100, 1000};

class LoopStats {
 public:
  // `busy_ns` of wall time, `cpu_ns` of it on the CPU: on a loaded machine the difference is time the
  // scheduler gave to other processes, which no change in the daemon shortens.
  void add_turn(int64_t busy_ns, int64_t cpu_ns) {
    const double ms = static_cast<double>(busy_ns) / 1e6;
    busy_.add(ms);
    if (ms > 10) ++over_10ms_;
    const double cpu_ms = static_cast<double>(cpu_ns) / 1e6;
    cpu_max_ms_ = std::max(cpu_max_ms_, cpu_ms);
    if (cpu_ms > 10) ++cpu_over_10ms_;
  }

  // The longest time each part of a turn took (control requests, probes, the stale-flow scan...),
  // so a long turn can be blamed on its part.
  void add_part(const char* part, int64_t ns) {
    double& longest = part_max_ms_[part];
    longest = std::max(longest, static_cast<double>(ns) / 1e6);
  }

  // {"turns", "busy_max_ms", "turns_over_10ms", "cpu_max_ms", "cpu_turns_over_10ms",
  //  "busy_ms": histogram, "part_max_ms": {part: ms}}
  [[nodiscard]] nlohmann::json json() const {
    return {{"turns", busy_.count()},
            {"busy_max_ms", busy_.max_ms()},
            {"turns_over_10ms", over_10ms_},
            {"cpu_max_ms", cpu_max_ms_},
            {"cpu_turns_over_10ms", cpu_over_10ms_},
            {"busy_ms", busy_.json()},
            {"part_max_ms", part_max_ms_}};
  }

 private:
  observability::Histogram busy_{kLoopBusyBucketsMs};
  uint64_t over_10ms_ = 0;
  double cpu_max_ms_ = 0;
  uint64_t cpu_over_10ms_ = 0;
  std::map<std::string, double> part_max_ms_;
};

// Times one part of a loop turn: from construction to the next mark() or destruction.
class LoopPartTimer {
 public:
  LoopPartTimer(LoopStats& stats, int64_t (*clock)()) : stats_(stats), clock_(clock), start_(clock()) {}
  // Ends the current part under `part` and starts the next.
  void mark(const char* part) {
    const int64_t now = clock_();
    stats_.add_part(part, now - start_);
    start_ = now;
  }

 private:
  LoopStats& stats_;
  int64_t (*clock_)();
  int64_t start_;
};

}  // namespace uplinkd

namespace uplinkd {

// The calling thread's CPU time, ns.
inline int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

}  // namespace uplinkd
