// What an HTTP request needs from the daemon, and how it gets it without touching the daemon's
// state from another thread: the listener's thread asks, the daemon's loop builds the snapshot on
// its next wake-up (the same JSON `uplinkctl` gets) and hands it over; rendering and sending stay
// on the listener's thread, so a slow client never holds up probing.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "observability/history.h"
#include "observability/status_page.h"

namespace uplinkd::observability {

enum class SnapshotKind { Metrics, Page };

// clang-tidy 14 takes the implicit move of the std::map member for one that may throw.
struct Snapshot {  // NOLINT(bugprone-exception-escape)
  // {"status": `status --json`, "flows": `flows --json`, "wireguard": `wireguard --json`, "version"}
  nlohmann::json data;
  // Page only: each interface's history by name, the last events (newest first), the clocks.
  std::map<std::string, HistorySeries> history;
  std::vector<Event> events;
  int64_t now_ns = 0;
  int64_t now_unix_ms = 0;
};

// The status page's data from a page snapshot: a pure function, so the page is tested without a daemon.
PageData page_data(const Snapshot& snapshot, int refresh_s);

class SnapshotBridge {
 public:
  SnapshotBridge();  // throws std::system_error when no eventfd can be had
  ~SnapshotBridge();
  SnapshotBridge(const SnapshotBridge&) = delete;
  SnapshotBridge& operator=(const SnapshotBridge&) = delete;

  // Readable when a request waits: the daemon's loop polls it.
  [[nodiscard]] int fd() const { return fd_; }

  // From a listener thread: the loop's snapshot, or nullopt when it did not come within `timeout`
  // or the bridge is closed.
  std::optional<Snapshot> request(SnapshotKind kind, std::chrono::milliseconds timeout);

  // From the loop: answers every waiting request with `make(kind)`, one snapshot per kind.
  void serve(const std::function<Snapshot(SnapshotKind)>& make);

  // No more requests are answered; the waiting ones get nullopt at once. reopen() undoes it (a
  // reload replaces the listeners: the old ones must not wait while they are stopped).
  void close();
  void reopen();

 private:
  struct Pending {
    SnapshotKind kind;
    std::promise<std::optional<Snapshot>> promise;
  };
  int fd_ = -1;
  std::mutex mutex_;
  std::deque<std::shared_ptr<Pending>> pending_;
  bool closed_ = false;
};

}  // namespace uplinkd::observability
