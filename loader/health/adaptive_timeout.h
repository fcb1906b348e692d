// `option timeout 'auto'` (an extension): how long one target's probe waits for its reply, learnt
// from the RTTs the target's replies measured, as TCP learns its retransmission timeout (RFC 6298):
//   first sample R:   SRTT = R, RTTVAR = R / 2
//   each later R:     RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|,  SRTT = 7/8 SRTT + 1/8 R
//   timeout =         clamp(SRTT + 4 x RTTVAR, floor, cap)
// Differences from TCP's RTO, and why:
//   - Before the first reply the timeout is the cap, so a start cannot fail a probe the fixed cap
//     would have passed (RFC 6298 starts at 1 s too); from the first reply on, the estimate
//     (3 x that RTT, at least the floor), as RFC 6298 does.
//   - A loss never feeds the estimator (Karn), and does not back the timeout off either: TCP
//     doubles its RTO because a retransmission is ambiguous; a probe is never ambiguous (each has
//     its own nonce), and doubling would stretch an outage's detection (50, 100, 200 ms ...).
//   - A reply that comes after its timeout still feeds the estimator (the tracker has counted the
//     probe lost): it is a true, unambiguous RTT, and the one sample that says the queue grew past
//     the timeout. Without it a sudden jump above the timeout would never be learnt.
// No I/O and no clock: the monitor feeds it and asks it; unit-tested alone.
#pragma once

#include <cstdint>
#include <optional>

namespace uplinkd::health {

struct AdaptiveTimeoutBounds {
  double floor_s = 0.05;  // never shorter: scheduling noise on the router and the path's own jitter
  double cap_s = 1.0;     // never longer, and the timeout before the estimator has enough samples
  bool operator==(const AdaptiveTimeoutBounds&) const = default;
};

class AdaptiveTimeout {
 public:
  explicit AdaptiveTimeout(const AdaptiveTimeoutBounds& bounds) : bounds_(bounds) {}

  // One probe's outcome: the RTT its reply measured (on time or late: both are true RTTs), or
  // nullopt for a probe that was lost, which changes nothing (Karn: no RTT, no sample).
  void on_result(std::optional<double> rtt_s);
  // The timeout for a probe sent now, in seconds.
  [[nodiscard]] double timeout_s() const;

  [[nodiscard]] double srtt_s() const { return srtt_s_; }
  [[nodiscard]] double rttvar_s() const { return rttvar_s_; }
  [[nodiscard]] uint64_t samples() const { return samples_; }
  [[nodiscard]] const AdaptiveTimeoutBounds& bounds() const { return bounds_; }

 private:
  AdaptiveTimeoutBounds bounds_;
  double srtt_s_ = 0;
  double rttvar_s_ = 0;
  uint64_t samples_ = 0;
};

// Over how long a cycle's probes leave, one after another (never all targets at once): a quarter
// of min(interval, timeout) with a fixed timeout; with timeout 'auto' (`bounds`) a sixteenth of
// min(interval, timeout_min). In an outage each failed cycle lasts until its last probe's timeout
// ends, so the last probe's delay is paid `down` times: a quarter of a 50 ms floor would be 6.25 ms
// per cycle with two targets, a sixteenth is 1.6 ms.
[[nodiscard]] double cycle_spread_s(double interval_s, double fixed_timeout_s,
                                    const std::optional<AdaptiveTimeoutBounds>& bounds);

}  // namespace uplinkd::health
