#include "health/adaptive_timeout.h"

#include <algorithm>
#include <cmath>

namespace uplinkd::health {
namespace {

// RFC 6298's gains and variance factor.
constexpr double kAlpha = 1.0 / 8;
constexpr double kBeta = 1.0 / 4;
constexpr double kK = 4;

}  // namespace

void AdaptiveTimeout::on_result(std::optional<double> rtt) {
  if (!rtt || !std::isfinite(*rtt) || *rtt < 0) return;  // a loss, or a clock oddity: no measurement
  const double rtt_s = *rtt;
  if (samples_ == 0) {
    srtt_s_ = rtt_s;
    rttvar_s_ = rtt_s / 2;
  } else {
    // RTTVAR first, from the SRTT before this sample (RFC 6298 2.3).
    rttvar_s_ = (1 - kBeta) * rttvar_s_ + kBeta * std::fabs(srtt_s_ - rtt_s);
    srtt_s_ = (1 - kAlpha) * srtt_s_ + kAlpha * rtt_s;
  }
  ++samples_;
}

double AdaptiveTimeout::timeout_s() const {
  if (samples_ == 0) return bounds_.cap_s;
  return std::clamp(srtt_s_ + kK * rttvar_s_, bounds_.floor_s, std::max(bounds_.floor_s, bounds_.cap_s));
}

double cycle_spread_s(double interval_s, double fixed_timeout_s,
                      const std::optional<AdaptiveTimeoutBounds>& bounds) {
  if (!bounds) return std::min(interval_s, fixed_timeout_s) / 4.0;
  return std::min(interval_s, bounds->floor_s) / 16.0;
}

}  // namespace uplinkd::health
