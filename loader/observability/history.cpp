#include "observability/history.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace uplinkd::observability {

UplinkHistory::UplinkHistory(size_t targets, size_t capacity, int64_t span_ns)
    : targets_(targets),
      capacity_(std::max<size_t>(capacity, 1)),
      span_ns_(span_ns),
      t_ns_(capacity_),
      state_(capacity_),
      loss_pct_(capacity_),
      rtt_ms_(capacity_ * targets_) {}

void UplinkHistory::add(const CyclePoint& point) {
  t_ns_[head_] = point.t_ns;
  state_[head_] = point.state;
  loss_pct_[head_] = point.loss_pct;
  for (size_t t = 0; t < targets_; ++t) {
    rtt_ms_[head_ * targets_ + t] =
        t < point.rtt_ms.size() ? point.rtt_ms[t] : std::numeric_limits<float>::quiet_NaN();
  }
  head_ = (head_ + 1) % capacity_;
  size_ = std::min(size_ + 1, capacity_);
}

HistorySeries UplinkHistory::series(int64_t now_ns) const {
  HistorySeries out;
  out.rtt_ms.resize(targets_);
  const size_t oldest = (head_ + capacity_ - size_) % capacity_;
  for (size_t i = 0; i < size_; ++i) {
    const size_t slot = (oldest + i) % capacity_;
    if (now_ns - t_ns_[slot] > span_ns_) continue;
    out.t_ns.push_back(t_ns_[slot]);
    out.state.push_back(state_[slot]);
    out.loss_pct.push_back(loss_pct_[slot]);
    for (size_t t = 0; t < targets_; ++t) out.rtt_ms[t].push_back(rtt_ms_[slot * targets_ + t]);
  }
  return out;
}

size_t UplinkHistory::memory_bytes() const {
  return capacity_ * (sizeof(int64_t) + sizeof(PointState) + sizeof(float)) + rtt_ms_.size() * sizeof(float);
}

void EventLog::add(Event event) {
  const std::lock_guard<std::mutex> lock(mutex_);
  events_.push_back(std::move(event));
  while (events_.size() > capacity_) events_.pop_front();
}

std::vector<Event> EventLog::recent() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return {events_.rbegin(), events_.rend()};
}

}  // namespace uplinkd::observability
