#include "daemon/conntrack_worker.h"

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <utility>

#include "common/log.h"
#include "netlink/conntrack.h"

namespace uplinkd {
namespace {

std::string hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%x", value);
  return text;
}

}  // namespace

namespace {

// The daemon takes SIGTERM, SIGHUP and SIGINT through a signalfd, which works only while every
// thread blocks them: a thread that does not would take SIGTERM's default action (the process
// dies without its cleanup). A new thread inherits the creating thread's mask, so block all
// signals around the creation, whatever the creator's mask is at that moment.
std::thread start_with_signals_blocked(std::function<void()> body) {
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  std::thread thread(std::move(body));
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return thread;
}

}  // namespace

ConntrackWorker::ConntrackWorker() : thread_(start_with_signals_blocked([this] { run(); })) {}

ConntrackWorker::~ConntrackWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void ConntrackWorker::submit(Job job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(job));
    ++totals_.pending;
  }
  wake_.notify_one();
}

bool ConntrackWorker::wait_idle(std::chrono::milliseconds limit) {
  std::unique_lock<std::mutex> lock(mutex_);
  return idle_.wait_for(lock, limit, [this] { return queue_.empty() && !busy_; });
}

ConntrackWorker::Totals ConntrackWorker::totals() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return totals_;
}

void ConntrackWorker::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and every job done
    const Job job = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    work(job);
    lock.lock();
    busy_ = false;
    --totals_.pending;
    if (queue_.empty()) idle_.notify_all();
  }
}

void ConntrackWorker::work(const Job& job) {
  const auto start = std::chrono::steady_clock::now();
  const std::string what =
      "conntrack entries with mark " + hex(job.mark) + "/" + hex(job.mask) + " (" + job.why + ")";
  try {
    const netlink::ConntrackDeleteResult r = netlink::conntrack_delete_by_mark(job.mark, job.mask);
    const auto took_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start)
            .count();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      totals_.deleted += r.deleted;
      totals_.failed += r.failed;
      totals_.deleted_by_uplink[job.uplink_id] += r.deleted;
    }
    log::notice("interface " + job.interface + ": " + std::to_string(r.deleted) + " " + what +
                " deleted in " + std::to_string(took_ms) + " ms");
    if (r.failed != 0) {
      log::warn("interface " + job.interface + ": " + std::to_string(r.failed) + " of " +
                std::to_string(r.matched) + " " + what + " could not be deleted");
    }
  } catch (const std::exception& e) {
    log::error("interface " + job.interface + ": deleting " + what + ": " + e.what());
  }
}

}  // namespace uplinkd
