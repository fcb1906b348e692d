#include "observability/snapshot.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace uplinkd::observability {

namespace {

using nlohmann::json;

double number_of(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

PageUplink page_uplink(const json& i, const std::map<std::string, HistorySeries>& history) {
  PageUplink u;
  u.name = i.value("name", "");
  u.device = i.value("device", "");
  u.state = i.value("state", "disabled");
  u.state_s = number_of(i, "state_s");
  u.score = static_cast<int>(number_of(i, "score"));
  u.rtt_ms = number_of(i, "rtt_ms");
  u.loss_pct = number_of(i, "loss_pct");
  u.path_mtu = static_cast<int>(number_of(i.value("path_mtu", json::object()), "mtu"));
  for (const json& t : i.value("targets", json::array())) {
    u.targets.push_back(
        {t.value("ip", ""), t.value("state", "unknown"), number_of(t, "rtt_ms"), number_of(t, "loss_pct")});
  }
  const json thresholds = i.value("thresholds", json::object());
  u.failure_latency_ms = number_of(thresholds, "failure_latency_ms");
  u.failure_loss_pct = number_of(thresholds, "failure_loss_pct");
  if (auto it = history.find(u.name); it != history.end()) u.history = it->second;
  return u;
}

}  // namespace

PageData page_data(const Snapshot& snapshot, int refresh_s) {
  PageData page;
  const json status = snapshot.data.value("status", json::object());
  page.instance = status.value("daemon", json::object()).value("instance", "");
  page.version = snapshot.data.value("version", "");
  page.now_ns = snapshot.now_ns;
  page.now_unix_ms = snapshot.now_unix_ms;
  page.refresh_s = refresh_s;
  for (const json& i : status.value("interfaces", json::array()))
    page.uplinks.push_back(page_uplink(i, snapshot.history));
  page.events = snapshot.events;
  return page;
}

SnapshotBridge::SnapshotBridge() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd for the metrics listener");
}

SnapshotBridge::~SnapshotBridge() {
  close();
  ::close(fd_);
}

std::optional<Snapshot> SnapshotBridge::request(SnapshotKind kind, std::chrono::milliseconds timeout) {
  auto pending = std::make_shared<Pending>(Pending{kind, {}});
  std::future<std::optional<Snapshot>> answer = pending->promise.get_future();
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return std::nullopt;
    pending_.push_back(pending);
  }
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof one);
  if (answer.wait_for(timeout) == std::future_status::ready) return answer.get();
  // Not answered in time: withdrawn, unless the loop took it meanwhile (then its answer is dropped).
  const std::lock_guard<std::mutex> lock(mutex_);
  pending_.erase(std::remove(pending_.begin(), pending_.end(), pending), pending_.end());
  return std::nullopt;
}

void SnapshotBridge::serve(const std::function<Snapshot(SnapshotKind)>& make) {
  uint64_t count = 0;
  [[maybe_unused]] ssize_t n = read(fd_, &count, sizeof count);
  std::deque<std::shared_ptr<Pending>> taken;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    taken.swap(pending_);
  }
  std::map<SnapshotKind, Snapshot> made;
  for (const auto& p : taken) {
    auto it = made.find(p->kind);
    if (it == made.end()) it = made.emplace(p->kind, make(p->kind)).first;
    p->promise.set_value(it->second);
  }
}

void SnapshotBridge::close() {
  std::deque<std::shared_ptr<Pending>> waiting;
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    waiting.swap(pending_);
  }
  for (const auto& p : waiting) p->promise.set_value(std::nullopt);
}

void SnapshotBridge::reopen() {
  const std::lock_guard<std::mutex> lock(mutex_);
  closed_ = false;
}

}  // namespace uplinkd::observability
