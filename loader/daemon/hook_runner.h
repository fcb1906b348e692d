// Runs the mwan3.user-compatible hook for each event, one at a time and in event order, as
// mwan3 does: `env -i ACTION=... INTERFACE=... DEVICE=... <hook>` (plus PATH, as hotplug-call
// sets it, and FIRSTCONNECT=1 on the first `connected`). Never blocks the daemon: children are
// reaped from the event loop, and a hook that runs longer than the limit is killed.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <string>

namespace uplinkd {

class HookRunner {
 public:
  explicit HookRunner(std::string path, int64_t time_limit_ns = 30LL * 1000000000LL);

  void enqueue(const std::string& action, const std::string& interface, const std::string& device,
               bool first_connect);
  // Reaps a finished hook and starts the next; kills an overdue one. Call on SIGCHLD and timers.
  void service(int64_t now_ns);
  // Runs what is queued to completion, waiting at most until `deadline_ns` (shutdown).
  void drain(int64_t deadline_ns);
  [[nodiscard]] int64_t next_deadline() const;  // INT64_MAX when idle
  [[nodiscard]] bool idle() const { return child_ <= 0 && queue_.empty(); }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  struct Event {
    std::string action, interface, device;
    bool first;
  };
  void start_next(int64_t now_ns);

  std::string path_;
  int64_t limit_ns_;
  std::deque<Event> queue_;
  pid_t child_ = -1;
  int64_t started_ns_ = 0;
  std::string running_action_;
};

}  // namespace uplinkd
