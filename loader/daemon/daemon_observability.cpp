// The daemon's side of the metrics listener and the status page: the listeners (one per
// metrics_listen address), the snapshots their threads ask the loop for, the per-uplink history
// rings fed by every decided probe cycle, and the last events fed by the log.
#include <chrono>
#include <string>

#include "common/log.h"
#include "daemon/daemon.h"
#include "health/monitor.h"
#include "observability/metrics_text.h"
#include "observability/status_page.h"

namespace uplinkd {

const char* version();

namespace {

// How long a listener's thread waits for the loop; the loop answers on its next wake-up, so only a
// loop stuck in something long (which the watchdog would also see) makes a scrape fail with 503.
constexpr std::chrono::milliseconds kSnapshotTimeout{2000};
constexpr int kPageRefreshS = 5;

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* level_word(log::Level level) {
  switch (level) {
    case log::Level::Warn:
      return "warning";
    case log::Level::Error:
      return "error";
    default:
      return "notice";
  }
}

}  // namespace

void Daemon::start_observability() {
  snapshots_ = std::make_unique<observability::SnapshotBridge>();
  log::set_observer(log::Level::Notice, [this](log::Level level, const std::string& message) {
    events_.add({unix_ms_now(), level_word(level), message});
  });
}

void Daemon::stop_observability() {
  stop_listeners();
  log::set_observer(log::Level::Notice, nullptr);
}

// A listener that cannot bind does not stop the daemon: failover matters more than its graphs.
// The error is logged with its fix and shown in `status` until a reload or restart binds it.
void Daemon::start_listeners() {
  listener_errors_.clear();
  for (const std::string& text : config_.globals.metrics_listen) {
    std::string problem;
    const auto address = observability::parse_listen_address(text, &problem);
    if (!address) {  // checked when the configuration was read; kept for safety
      listener_errors_.push_back("metrics listener " + text + ": " + problem);
      continue;
    }
    try {
      listeners_.push_back(std::make_unique<observability::HttpListener>(
          *address, [this](const std::string& path) { return answer_http(path); }));
      log::notice("metrics listener on http://" + address->text + "/ (/metrics and the status page)");
    } catch (const std::exception& e) {
      listener_errors_.emplace_back(e.what());
      log::error(std::string(e.what()) + "; uplinkd goes on without it");
    }
  }
}

void Daemon::stop_listeners() {
  if (!snapshots_) return;
  // A request waiting for the loop would hold up its listener's shutdown: it gets 503 at once.
  snapshots_->close();
  listeners_.clear();
  snapshots_->reopen();
}

nlohmann::json Daemon::metrics_listener_json() const {
  nlohmann::json listening = nlohmann::json::array();
  for (const auto& l : listeners_) listening.push_back(l->address());
  return {
      {"configured", config_.globals.metrics_listen}, {"listening", listening}, {"errors", listener_errors_}};
}

void Daemon::serve_snapshots() {
  snapshots_->serve([this](observability::SnapshotKind kind) { return make_snapshot(kind); });
}

// The same JSON `uplinkctl status`, `flows` and `wireguard` get, built now on the loop; the page's
// kind adds copies of the history rings and the events.
observability::Snapshot Daemon::make_snapshot(observability::SnapshotKind kind) const {
  observability::Snapshot s;
  s.now_ns = health::monotonic_ns();
  s.now_unix_ms = unix_ms_now();
  s.data = {{"status", status()},
            {"flows", hygiene_->counters_json()},
            {"wireguard", wireguard_ ? wireguard_->json() : nlohmann::json::object()},
            {"version", version()}};
  if (kind == observability::SnapshotKind::Page) {
    for (const auto& [id, u] : uplinks_) {
      auto h = histories_.find(id);
      if (h != histories_.end()) s.history[u.cfg->name] = h->second.series(s.now_ns);
    }
    s.events = events_.recent();
  }
  return s;
}

// On a listener's thread: only the bridge is touched here.
observability::HttpResponse Daemon::answer_http(const std::string& path) {
  const bool metrics = path == "/metrics";
  if (!metrics && path != "/") return {404, "text/plain; charset=utf-8", "not found: try / or /metrics\n"};
  const auto snapshot = snapshots_->request(
      metrics ? observability::SnapshotKind::Metrics : observability::SnapshotKind::Page, kSnapshotTimeout);
  if (!snapshot) return {503, "text/plain; charset=utf-8", "the daemon did not answer in time; try again\n"};
  if (metrics)
    return {200, observability::kMetricsContentType, observability::render_metrics(snapshot->data)};
  return {200, "text/html; charset=utf-8",
          observability::render_status_page(observability::page_data(*snapshot, kPageRefreshS))};
}

// One ring per interface id, sized for its targets; a reload that changes them starts it afresh.
void Daemon::record_cycle(uint32_t id, size_t targets, const observability::CyclePoint& point) {
  auto it = histories_.find(id);
  if (it == histories_.end() || it->second.targets() != targets) {
    histories_.erase(id);
    it = histories_.emplace(id, observability::UplinkHistory(targets)).first;
  }
  it->second.add(point);
}

}  // namespace uplinkd
