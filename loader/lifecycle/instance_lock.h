// One daemon per instance: an exclusive flock on the instance's pin directory, taken before anything
// is touched (as libxdp serialises its own bpffs operations). The kernel drops the lock when its holder
// dies, so a crashed daemon never blocks its successor; the holder of a live lock is named from
// /proc/locks.
#pragma once

#include <sys/types.h>

#include <stdexcept>
#include <string>

namespace uplinkd::lifecycle {

// Another live daemon holds the instance. what(): "instance NAME is already running (pid N)".
class AlreadyRunning : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class InstanceLock {
 public:
  // Creates `pin_dir` (and its parents) when missing and takes the lock without waiting. Throws
  // AlreadyRunning when a live process holds it, std::runtime_error (with the fix) when the directory
  // cannot be made or locked. `inherited_fd` >= 0: a lock this process already holds (kept open across
  // an exec by `uplinkctl restart`), checked and reused.
  InstanceLock(const std::string& pin_dir, const std::string& instance, int inherited_fd = -1);
  ~InstanceLock();
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;

  [[nodiscard]] int fd() const { return fd_; }
  // Takes the lock again in the name of this process (after daemonizing forked it away from the
  // process that took it), so /proc/locks names the daemon's own pid. Throws like the constructor.
  void relock_for_this_process(const std::string& pin_dir, const std::string& instance);
  // Keeps the lock open across exec (for a restart in place); the new image receives fd().
  void keep_across_exec();

 private:
  int fd_ = -1;
};

// The pid holding a flock on `path` according to /proc/locks, or 0 when none is listed.
pid_t flock_holder(const std::string& path);

}  // namespace uplinkd::lifecycle
