// The daemon's side of the metrics listener and the status page: the listeners (one per
// metrics_listen address), the snapshots their threads ask the loop for, the per-uplink history
// rings fed by every decided probe cycle, and the last events fed by the log.
#include <chrono>
#include <optional>
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

// The page's span from `?minutes=N` (the plots' zoom links): 5 to 60 minutes, an hour by default.
std::optional<double> page_span_s(const observability::HttpRequest& request) {
  auto it = request.query.find("minutes");
  if (it == request.query.end()) return 3600.0;
  const std::string& text = it->second;
  if (text.empty() || text.size() > 2 || text.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  const int minutes = std::stoi(text);
  if (minutes < 5 || minutes > 60) return std::nullopt;
  return minutes * 60.0;
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
      listener_errors_.push_back(std::string("metrics listener ").append(text).append(": ").append(problem));
      continue;
    }
    try {
      listeners_.push_back(std::make_unique<observability::HttpListener>(
          *address, [this](const observability::HttpRequest& r) { return answer_http(r); }));
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
      if (h != histories_.end()) s.history[u.cfg->name] = h->second.ring.series(s.now_ns);
    }
    s.events = events_.recent();
  }
  return s;
}

// On a listener's thread: only the bridge is touched here.
observability::HttpResponse Daemon::answer_http(const observability::HttpRequest& request) {
  constexpr const char* kText = "text/plain; charset=utf-8";
  const bool metrics = request.path == "/metrics";
  if (!metrics && request.path != "/") return {404, kText, "not found: try / or /metrics\n"};
  const std::optional<double> span_s = page_span_s(request);
  if (!metrics && !span_s) return {400, kText, "minutes: a whole number from 5 to 60\n"};
  const auto snapshot = snapshots_->request(
      metrics ? observability::SnapshotKind::Metrics : observability::SnapshotKind::Page, kSnapshotTimeout);
  if (!snapshot) return {503, kText, "the daemon did not answer in time; try again\n"};
  if (metrics)
    return {200, observability::kMetricsContentType, observability::render_metrics(snapshot->data)};
  observability::PageData page = observability::page_data(*snapshot, kPageRefreshS);
  page.span_s = *span_s;
  return {200, "text/html; charset=utf-8", observability::render_status_page(page)};
}

// One ring per interface id, for its target list: a reload that changes the targets starts it afresh
// (the rows would otherwise plot one target's RTTs under another's name).
void Daemon::record_cycle(uint32_t id, const std::vector<IpAddress>& targets,
                          const observability::CyclePoint& point) {
  auto it = histories_.find(id);
  if (it == histories_.end() || it->second.targets != targets) {
    histories_.erase(id);
    it = histories_.emplace(id, History{targets, observability::UplinkHistory(targets.size())}).first;
  }
  it->second.ring.add(point);
}

}  // namespace uplinkd
