#include "daemon/hook_runner.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/log.h"

namespace uplinkd {

HookRunner::HookRunner(std::string path, int64_t time_limit_ns)
    : path_(std::move(path)), limit_ns_(time_limit_ns) {}

void HookRunner::enqueue(const std::string& action, const std::string& interface, const std::string& device,
                         bool first_connect) {
  if (path_.empty()) return;
  queue_.push_back({action, interface, device, first_connect});
}

int64_t HookRunner::next_deadline() const {
  if (child_ > 0) return started_ns_ + limit_ns_;
  return queue_.empty() ? INT64_MAX : 0;
}

void HookRunner::service(int64_t now_ns) {
  if (child_ > 0) {
    int status = 0;
    pid_t r = waitpid(child_, &status, WNOHANG);
    if (r == 0) {
      if (now_ns - started_ns_ < limit_ns_) return;
      char limit[32];
      snprintf(limit, sizeof limit, "%.1f", static_cast<double>(limit_ns_) / 1e9);
      log::warn("hook " + path_ + " (ACTION=" + running_action_ + ") ran longer than " + limit +
                " s: killed");
      kill(child_, SIGKILL);
      waitpid(child_, &status, 0);
    } else if (r == child_ && WIFEXITED(status) && WEXITSTATUS(status) != 0) {
      log::info("hook " + path_ + " (ACTION=" + running_action_ + ") exited with status " +
                std::to_string(WEXITSTATUS(status)));
    }
    child_ = -1;
  }
  if (!queue_.empty()) start_next(now_ns);
}

void HookRunner::drain(int64_t deadline_ns) {
  // Bounded by the deadline: each pass sleeps 10 ms while a hook runs.
  for (int i = 0; i < 100000 && !idle(); ++i) {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const int64_t now = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
    if (now >= deadline_ns) {
      limit_ns_ = 0;  // kill the one still running
      service(now);
      queue_.clear();
      return;
    }
    service(now);
    if (!idle()) usleep(10000);
  }
}

void HookRunner::start_next(int64_t now_ns) {
  Event e = queue_.front();
  queue_.pop_front();
  std::vector<std::string> env = {"ACTION=" + e.action, "INTERFACE=" + e.interface, "DEVICE=" + e.device,
                                  "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  if (e.first) env.push_back("FIRSTCONNECT=1");
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string path = path_;
  char* argv[] = {path.data(), nullptr};

  pid_t pid = fork();
  if (pid < 0) {
    log::error("hook " + path_ + ": fork failed: " + strerror(errno));
    return;
  }
  if (pid == 0) {
    // The child must not inherit the daemon's blocked signals (signalfd) or its fds' meaning.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    setpgid(0, 0);
    // The shipped units raise uplinkd's priority (nice -10) for its probes' sake; a hook is the
    // user's script, as mwan3's hotplug runs it: back to the default priority (never above it).
    errno = 0;
    if (getpriority(PRIO_PROCESS, 0) < 0 && errno == 0) setpriority(PRIO_PROCESS, 0, 0);
    execve(path.c_str(), argv, envp.data());
    dprintf(STDERR_FILENO, "uplinkd: hook %s: %s\n", path.c_str(), strerror(errno));
    _exit(127);
  }
  child_ = pid;
  started_ns_ = now_ns;
  running_action_ = e.action;
}

}  // namespace uplinkd
