// A fixed-bucket histogram of milliseconds (probe RTTs, probe send lateness), counted where the
// values arise and exported as Prometheus histograms in seconds (metrics_text.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <vector>

namespace uplinkd::observability {

// Bucket bounds (upper, inclusive), milliseconds.
inline constexpr double kRttBucketsMs[] = {0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};
inline constexpr double kLatenessBucketsMs[] = {1, 2, 5, 10, 20, 50, 100, 250, 1000};

class Histogram {
 public:
  explicit Histogram(std::span<const double> bounds_ms)
      : bounds_(bounds_ms.begin(), bounds_ms.end()), counts_(bounds_.size() + 1, 0) {}

  void add(double ms) {
    const auto bucket = std::lower_bound(bounds_.begin(), bounds_.end(), ms) - bounds_.begin();
    ++counts_[static_cast<size_t>(bucket)];
    ++count_;
    sum_ms_ += ms;
    max_ms_ = std::max(max_ms_, ms);
  }

  [[nodiscard]] uint64_t count() const { return count_; }
  [[nodiscard]] double max_ms() const { return max_ms_; }

  // {"le_ms": [bounds], "counts": [per bucket, the last is above every bound], "count", "sum_ms",
  // "max_ms"}: counts are per bucket, not cumulative.
  [[nodiscard]] nlohmann::json json() const {
    return {
        {"le_ms", bounds_}, {"counts", counts_}, {"count", count_}, {"sum_ms", sum_ms_}, {"max_ms", max_ms_}};
  }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  double sum_ms_ = 0;
  double max_ms_ = 0;
};

}  // namespace uplinkd::observability
