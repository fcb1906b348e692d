// Deletes a dead uplink's conntrack entries by mark on a thread of its own. A delete by mark costs
// about 3 s per 100,000 matching entries (netlink/conntrack.h); on the daemon's loop that would hold
// up the probes of the other uplinks, hotplug events and `uplinkctl` for as long. The loop queues a
// job and goes on; the worker logs each job's outcome.
//
// No job needs cancelling when the uplink comes back meanwhile: the delete names each dumped entry
// by its tuple and conntrack id, so a connection opened after the dump is never deleted.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace uplinkd {

class ConntrackWorker {
 public:
  struct Job {
    uint32_t uplink_id = 0;
    std::string interface;  // for the log line
    uint32_t mark = 0;      // non-zero under mask (conntrack_delete_by_mark refuses anything else)
    uint32_t mask = 0;
    std::string why;  // "disconnected", "flush_conntrack ifdown"
  };
  struct Totals {
    uint64_t deleted = 0;
    uint64_t failed = 0;
    std::map<uint32_t, uint64_t> deleted_by_uplink;
    size_t pending = 0;  // jobs queued or under way
  };

  // The thread works in the network namespace of the thread that constructs the worker.
  ConntrackWorker();
  ~ConntrackWorker();  // finishes every queued job (nothing a dead uplink left is kept), then joins
  ConntrackWorker(const ConntrackWorker&) = delete;
  ConntrackWorker& operator=(const ConntrackWorker&) = delete;

  void submit(Job job);
  // True once no job is queued or under way; false when `limit` passed first.
  bool wait_idle(std::chrono::milliseconds limit);
  [[nodiscard]] Totals totals() const;

 private:
  void run();
  void work(const Job& job);

  mutable std::mutex mutex_;
  std::condition_variable wake_;  // a job was queued, or stop
  std::condition_variable idle_;  // the queue ran dry
  std::deque<Job> queue_;
  bool busy_ = false;
  bool stopping_ = false;
  Totals totals_;
  std::thread thread_;  // last: starts after everything it uses exists
};

}  // namespace uplinkd
